"""The sample app's /metrics query parameters, and the SQL each combination counts with."""

from __future__ import annotations

import pytest
from dbos_sample_app.service import (
    PostgresQueueDepth,
    SqliteQueueDepth,
    count_limit,
    count_params,
    count_sql,
    count_statuses,
    count_version,
)
from dbos_sample_app.settings import APP_NAME


@pytest.mark.parametrize(("values", "statuses"), [
    ([], ("ENQUEUED",)),  # the guide's metric
    (["ENQUEUED"], ("ENQUEUED",)),
    (["PENDING"], ("PENDING",)),
    (["ENQUEUED,PENDING"], ("ENQUEUED", "PENDING")),
    (["PENDING,ENQUEUED"], ("ENQUEUED", "PENDING")),  # one order, so one statement
])
def test_statuses(values, statuses):
    assert count_statuses(values) == statuses


@pytest.mark.parametrize("raw", ["", "RUNNING", "DELAYED", "SUCCESS", "enqueued", "ENQUEUED,", ",PENDING",
                                 "ENQUEUED,ENQUEUED", "ENQUEUED, PENDING", "ENQUEUED;PENDING", "ENQUEUED,PENDING,"])
def test_bad_statuses_are_refused_naming_the_parameter(raw):
    with pytest.raises(ValueError, match=r"^statuses must be ENQUEUED, PENDING or ENQUEUED,PENDING .*got"):
        count_statuses([raw])


@pytest.mark.parametrize(("name", "parse"), [("statuses", count_statuses), ("version", count_version),
                                             ("max", count_limit)])
def test_each_parameter_is_given_once(name, parse):
    good = {"statuses": "ENQUEUED", "version": "v1", "max": "3"}[name]
    with pytest.raises(ValueError, match=f"^give {name} once, got it 2 times"):
        parse([good, good])


@pytest.mark.parametrize(("values", "version"), [
    ([], None),  # every version
    (["v1"], "v1"),
    (["1.2.3+build 7 'x'; --"], "1.2.3+build 7 'x'; --"),  # a bound parameter: any text is a version
    (["é"], "é"),
])
def test_version(values, version):
    assert count_version(values) == version


@pytest.mark.parametrize("raw", ["", "v\x001", "v1\n", "\t", "v\x7f"])
def test_bad_versions_are_refused_naming_the_parameter(raw):
    with pytest.raises(ValueError, match=r"^version must be a non-empty application version"):
        count_version([raw])


def test_one_statement_per_shape_with_the_version_bound():
    shapes = {(limit, statuses, by_version): count_sql(PostgresQueueDepth, limit, statuses, by_version)
              for limit in (None, 20) for statuses in (("ENQUEUED",), ("PENDING",), ("ENQUEUED", "PENDING"))
              for by_version in (False, True)}
    assert len(set(shapes.values())) == len(shapes) == 12
    assert shapes[None, ("ENQUEUED",), False] == (
        "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = %s AND status = 'ENQUEUED' "
        "AND application_name = %s")
    assert shapes[20, ("ENQUEUED", "PENDING"), True] == (
        "SELECT count(*) FROM (SELECT 1 FROM dbos.workflow_status WHERE queue_name = %s "
        "AND status IN ('ENQUEUED', 'PENDING') AND application_name = %s AND application_version = %s "
        "ORDER BY status, priority, created_at LIMIT 20) AS bounded")
    assert count_sql(PostgresQueueDepth, None, ("PENDING", "ENQUEUED")) == shapes[None, ("ENQUEUED", "PENDING"), False]
    for (_, _, by_version), sql in shapes.items():
        assert sql.count("%s") == len(count_params("q", "v1" if by_version else None))
    assert count_params("q", None) == ("q", APP_NAME)
    assert count_params("q", "it's v1") == ("q", APP_NAME, "it's v1")


def test_sqlite_repeats_the_partial_index_predicate():
    sql = count_sql(SqliteQueueDepth, None, ("PENDING",), True)
    assert sql == ("SELECT count(*) FROM workflow_status WHERE queue_name = ? AND status = 'PENDING' "
                   "AND status IN ('ENQUEUED', 'PENDING') AND application_name = ? AND application_version = ?")


@pytest.mark.parametrize("statuses", [(), ("DELAYED",), ("ENQUEUED", "SUCCESS"), ("ENQUEUED'; --",)])
def test_the_sql_takes_in_flight_statuses_only(statuses):
    with pytest.raises(ValueError, match="statuses must be some of ENQUEUED, PENDING"):
        count_sql(PostgresQueueDepth, None, statuses)
