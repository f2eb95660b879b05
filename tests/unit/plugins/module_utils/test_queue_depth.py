"""Unit tests for plugins/module_utils/queue_depth.py (no I/O; the integration tests do the I/O)."""

import pytest
from ansible_collections.dbos.deploy.plugins.module_utils import queue_depth as qd


@pytest.mark.parametrize(("queue_length", "target", "lo", "hi", "expected"), [
    (7, 2, 1, 10, 4),      # ceil(7/2)
    (8, 2, 1, 10, 4),
    (0, 2, 1, 10, 1),      # empty queue: the minimum
    (0, 2, 0, 10, 0),      # scale to zero
    (1, 2, 0, 10, 1),
    (100, 2, 1, 10, 10),   # capped
    (3, 5, 2, 10, 2),      # below the minimum
    (2.5, 2, 1, 10, 2),    # a metrics endpoint may answer a float
])
def test_desired_replicas_is_kedas_formula(queue_length, target, lo, hi, expected):
    assert qd.desired_replicas(queue_length, target, lo, hi) == expected


@pytest.mark.parametrize(("args", "message"), [
    ((1, 0, 1, 10), "target_per_replica must be positive"),
    ((1, 2, 5, 3), "min_replicas"),
    ((1, 2, -1, 3), "min_replicas"),
])
def test_desired_replicas_rejects_impossible_settings(args, message):
    with pytest.raises(qd.QueueDepthError, match=message):
        qd.desired_replicas(*args)


def test_count_query_inlines_statuses_and_binds_the_rest():
    sql, params = qd.count_query(["ENQUEUED", "PENDING", "ENQUEUED"], application_name="app")
    assert sql == ('SELECT count(*) FROM "dbos".workflow_status WHERE queue_name = %(queue)s '
                   "AND status IN ('ENQUEUED', 'PENDING') AND application_name = %(application_name)s")
    assert params == {"application_name": "app"}


def test_count_query_grouped_by_version():
    sql, params = qd.count_query(["ENQUEUED"], schema="sys", application_version="v2", group_by_version=True)
    assert sql.startswith('SELECT application_version, count(*) FROM "sys".workflow_status')
    assert "application_version = %(application_version)s" in sql
    assert sql.endswith("GROUP BY application_version ORDER BY application_version")
    assert params == {"application_version": "v2"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"statuses": ["RUNNING"]}, "statuses must be some of"),
    ({"statuses": []}, "statuses must be some of"),
    ({"statuses": ["ENQUEUED"], "schema": 'dbos"; DROP TABLE x; --'}, "schema must be a plain SQL identifier"),
])
def test_count_query_rejects_bad_input(kwargs, message):
    with pytest.raises(qd.QueueDepthError, match=message):
        qd.count_query(**kwargs)


@pytest.mark.parametrize(("body", "location", "expected"), [
    ('{"queue_length": 7}', "queue_length", 7),
    ('{"queue_length": "7"}', "queue_length", 7),
    ('{"queue_length": 2.5}', "queue_length", 2.5),
    ('{"data": {"queues": [{"depth": 3}]}}', "data.queues.0.depth", 3),
])
def test_metrics_body(body, location, expected):
    assert qd.parse_metrics_body(body, location) == expected


@pytest.mark.parametrize(("body", "message"), [
    ("<html>busy</html>", "did not answer JSON"),
    ('{"length": 7}', "has no field 'queue_length'"),
    ('{"queue_length": "many"}', "is not a number"),
    ('{"queue_length": true}', "is not a number"),
    ('{"queue_length": null}', "is not a number"),
    ('{"queue_length": -1}', "is not a queue length"),
])
def test_metrics_body_errors(body, message):
    with pytest.raises(qd.QueueDepthError, match=message):
        qd.parse_metrics_body(body, "queue_length")


def test_redact_hides_the_password():
    assert qd.redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"


PARAMS = {"source": "url", "queue": "taskQueue", "url": "http://x/metrics/taskQueue", "value_location": "queue_length",
          "timeout": 1, "validate_certs": True, "target_per_replica": 2, "min_replicas": 1, "max_replicas": 10,
          "wait_timeout": 10, "interval": 2}


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_until_polls_until_the_queue_drains(monkeypatch):
    readings = iter([5, 3, 0])
    monkeypatch.setattr(qd.UrlSource, "read", lambda self: (next(readings), None))
    fake = FakeTime()
    result = qd.poll({**PARAMS, "wait_until": {"queue_length_at_most": 0}}, fake.clock, fake.sleep)
    assert (result["queue_length"], result["desired_replicas"], result["polls"]) == (0, 1, 3)
    assert result["elapsed_ms"] == 4000.0


def test_wait_until_fails_with_the_last_reading(monkeypatch):
    monkeypatch.setattr(qd.UrlSource, "read", lambda self: (7, None))
    fake = FakeTime()
    with pytest.raises(qd.WaitTimeout, match=r"still has 7 workflows \(more than 0\) after 10.0 s") as info:
        qd.poll({**PARAMS, "wait_until": {"queue_length_at_most": 0}}, fake.clock, fake.sleep)
    assert info.value.result["queue_length"] == 7
    assert info.value.result["desired_replicas"] == 4
