"""Unit tests for plugins/module_utils/queue_depth.py (no I/O; the integration tests do the I/O)."""

import pytest
from ansible_collections.dbos.deploy.plugins.module_utils import queue_depth as qd

from tests.unit.plugins.module_utils.fake_time import FakeTime


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
    assert qd.parse_metrics_body(body, location)[0] == expected


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


def test_wait_until_polls_until_the_queue_drains(monkeypatch):
    readings = iter([5, 3, 0])
    monkeypatch.setattr(qd.UrlSource, "read", lambda self: (next(readings), None, None))
    fake = FakeTime()
    result = qd.poll({**PARAMS, "wait_until": {"queue_length_at_most": 0}}, fake.clock, fake.sleep)
    assert (result["queue_length"], result["desired_replicas"], result["polls"]) == (0, 1, 3)
    assert result["elapsed_ms"] == 4000.0


def test_wait_until_fails_with_the_last_reading(monkeypatch):
    monkeypatch.setattr(qd.UrlSource, "read", lambda self: (7, None, None))
    fake = FakeTime()
    with pytest.raises(qd.WaitTimeout, match=r"still has 7 workflows \(more than 0\) after 10.0 s") as info:
        qd.poll({**PARAMS, "wait_until": {"queue_length_at_most": 0}}, fake.clock, fake.sleep)
    assert info.value.result["queue_length"] == 7
    assert info.value.result["desired_replicas"] == 4


@pytest.mark.parametrize(("target", "max_replicas", "at_most", "expected"), [
    (2, 10, None, 20),
    (1, 1, None, 1),
    (5, 0, None, 1),      # no replica at all: one row still tells empty from not empty
    (2, 10, 0, 20),       # draining needs 1, the replica count 20
    (2, 10, 99, 100),     # "more than 99" needs 100
    (3, 4, 11, 12),
])
def test_count_bound(target, max_replicas, at_most, expected):
    assert qd.count_bound(target, max_replicas, at_most) == expected


@pytest.mark.parametrize(("args", "message"), [
    ((0, 10), "target_per_replica must be positive"),
    ((2, -1), "max_replicas must be 0 or more"),
    ((2, 10, -1), "queue_length_at_most must be 0 or more"),
    ((2 ** 62, 4), "at most 9223372036854775807"),
])
def test_count_bound_refuses_impossible_settings(args, message):
    with pytest.raises(qd.QueueDepthError, match=message):
        qd.count_bound(*args)


@pytest.mark.parametrize(("target", "lo", "hi"), [(2, 1, 10), (1, 0, 1), (3, 0, 4), (7, 2, 2), (1, 0, 0)])
def test_the_bounded_count_asks_for_what_the_exact_count_asks_for(target, lo, hi):
    """For every backlog below, at and above the bound: a count that stops at the bound (what LIMIT
    does) gives the replicas the exact count gives, and says whether its length is exact."""
    bound = qd.count_bound(target, hi)
    for backlog in range(0, 3 * bound + 2):
        queue_length, exact = qd.bounded_reading(min(backlog, bound), bound)
        assert qd.desired_replicas(queue_length, target, lo, hi) == qd.desired_replicas(backlog, target, lo, hi), \
            backlog
        assert exact == (backlog < bound), backlog
        assert queue_length == backlog if exact else queue_length <= backlog


def test_a_wait_is_decided_as_by_the_exact_count():
    for at_most in (0, 1, 5, 40):
        bound = qd.count_bound(2, 10, at_most)
        for backlog in range(0, bound + 3):
            queue_length = qd.bounded_reading(min(backlog, bound), bound)[0]
            assert (queue_length <= at_most) == (backlog <= at_most), (at_most, backlog)


def test_an_unbounded_reading_is_exact():
    assert qd.bounded_reading(10 ** 9, None) == (10 ** 9, True)


def test_count_query_with_a_limit_counts_at_most_that_many_in_index_order():
    sql, params = qd.count_query(["ENQUEUED", "PENDING"], application_name="app", limit="20")
    assert sql == ('SELECT count(*) FROM (SELECT 1 FROM "dbos".workflow_status WHERE queue_name = %(queue)s '
                   "AND status IN ('ENQUEUED', 'PENDING') AND application_name = %(application_name)s "
                   "ORDER BY status, priority, created_at LIMIT 20) AS bounded")
    assert params == {"application_name": "app"}


@pytest.mark.parametrize(("limit", "message"), [
    (0, "limit must be a positive integer"),
    (-3, "limit must be a positive integer"),
    ("20; DROP TABLE x", "limit must be a positive integer"),
    ("1.5", "limit must be a positive integer"),
    (True, "limit must be a positive integer"),
    (2.0, "limit must be a positive integer"),
    (2 ** 63, "at most"),
])
def test_count_query_refuses_a_bad_limit(limit, message):
    with pytest.raises(qd.QueueDepthError, match=message):
        qd.count_query(["ENQUEUED"], limit=limit)


def test_a_count_per_version_is_never_bounded():
    with pytest.raises(qd.QueueDepthError, match="always exact"):
        qd.count_query(["ENQUEUED"], group_by_version=True, limit=20)


@pytest.mark.parametrize(("body", "expected"), [
    ('{"queue_length": 7}', (7, None)),
    ('{"queue_length": 7, "queue_length_exact": true}', (7, True)),
    ('{"queue_length": 20, "queue_length_exact": false}', (20, False)),
    ('{"data": {"depth": 3, "depth_exact": false}}', (3, False)),
])
def test_metrics_body_says_whether_it_is_exact(body, expected):
    location = "data.depth" if "data" in body else "queue_length"
    assert qd.parse_metrics_body(body, location) == expected


def test_metrics_body_exactness_must_be_a_boolean():
    with pytest.raises(qd.QueueDepthError, match="'queue_length_exact' is not a boolean"):
        qd.parse_metrics_body('{"queue_length": 7, "queue_length_exact": "no"}', "queue_length")


@pytest.mark.parametrize(("reading", "extra", "outcome"), [
    ((20, False), {}, (20, False, 10)),             # the endpoint's bound is ours: max replicas
    ((50, False), {}, (50, False, 10)),             # a higher bound than needed
    ((7, True), {}, (7, True, 4)),
    ((7, None), {}, (7, None, 4)),                  # an endpoint that does not say
    ((5, False), {}, "counted only up to 5 .* raise the url's max= to at least 20"),
    ((30, False), {"wait_until": {"queue_length_at_most": 40}}, "at least 41"),
    ((20, False), {"exact_count": True}, "answered a lower bound"),
])
def test_url_answers_that_are_lower_bounds(monkeypatch, reading, extra, outcome):
    monkeypatch.setattr(qd.UrlSource, "read", lambda self: (*reading, None))
    fake = FakeTime()
    params = {**PARAMS, "wait_timeout": 0, **extra}
    if isinstance(outcome, str):
        with pytest.raises(qd.QueueDepthError, match=outcome):
            qd.poll(params, fake.clock, fake.sleep)
        return
    result = qd.poll(params, fake.clock, fake.sleep)
    assert (result["queue_length"], result["queue_length_exact"], result["desired_replicas"]) == outcome
    assert result["count_bound"] is None
