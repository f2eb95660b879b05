"""Unit tests for the filter dbos.deploy.queue_depth_query and the literal SQL behind it."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.queue_depth_query import queue_depth_query
from ansible_collections.dbos.deploy.plugins.module_utils import queue_depth as qd


def test_it_is_the_module_query_with_the_values_written_in():
    sql = qd.count_query(["ENQUEUED", "PENDING"], application_name="app")[0]
    assert queue_depth_query("taskQueue", application_name="app") == sql.replace(
        "%(queue)s", "'taskQueue'").replace("%(application_name)s", "'app'")


def test_quotes_and_backslashes_stay_inside_the_literal():
    assert qd.sql_literal("it's") == "'it''s'"
    assert qd.sql_literal("a\\b'c") == "E'a\\\\b''c'"
    sql = queue_depth_query("o'q", statuses=["ENQUEUED"], application_version="v'1")
    assert sql.endswith("WHERE queue_name = 'o''q' AND status IN ('ENQUEUED') AND application_version = 'v''1'")


def test_empty_filters_mean_no_filter():
    assert "application" not in queue_depth_query("q", application_name="", application_version="")


@pytest.mark.parametrize(("queue", "message"), [
    ("", "non-empty"),
    ("_dbos_internal_queue", "internal queues"),
    (" padded", "whitespace"),
    ("tab\tqueue", "control characters"),
    ("nul\x00", "control characters"),
])
def test_names_dbos_would_not_have_are_refused(queue, message):
    with pytest.raises(AnsibleFilterError, match=message):
        queue_depth_query(queue)


def test_bad_statuses_are_refused():
    with pytest.raises(AnsibleFilterError, match="statuses must be some of"):
        queue_depth_query("q", statuses=["RUNNING"])


def test_a_limit_bounds_the_count():
    sql = queue_depth_query("taskQueue", limit=20)
    assert sql == qd.count_query(["ENQUEUED", "PENDING"], limit=20)[0].replace("%(queue)s", "'taskQueue'")
    assert sql.endswith("ORDER BY status, priority, created_at LIMIT 20) AS bounded")
    assert queue_depth_query("taskQueue", limit="") == queue_depth_query("taskQueue")


@pytest.mark.parametrize("limit", [0, "x", -1, "1; DROP TABLE t"])
def test_a_bad_limit_is_refused(limit):
    with pytest.raises(AnsibleFilterError, match="limit must be a positive integer"):
        queue_depth_query("taskQueue", limit=limit)


def test_grouped_by_version_it_is_the_modules_grouped_count():
    sql = qd.count_query(["ENQUEUED", "PENDING"], group_by_version=True)[0]
    assert queue_depth_query("taskQueue", group_by="application_version") == sql.replace("%(queue)s", "'taskQueue'")
    assert sql.startswith("SELECT application_version, count(*)") and "GROUP BY application_version" in sql


@pytest.mark.parametrize(("args", "message"), [
    ({"group_by": "queue_name"}, "group_by is application_version or empty"),
    ({"group_by": "application_version", "limit": 5}, "always exact: no limit with group_by"),
])
def test_a_grouping_it_cannot_do_is_refused(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        queue_depth_query("q", **args)
