"""The sample app's HTTP endpoints, configuration and logs, against SQLite and the lab PostgreSQL."""

from __future__ import annotations

import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dbos import DBOSClient
from dbos_sample_app.service import (
    DRAINING,
    IN_FLIGHT_STATUSES,
    STATE,
    PostgresQueueDepth,
    count_params,
    count_sql,
    make_app,
)
from dbos_sample_app.settings import APP_NAME, QUEUE_NAME, Settings, SettingsError

from tests.sample_app.harness import dbos_migrate, wait_for

BAD_SECONDS = {
    "abc": "must be a number",
    "-1": "must be at least 0",
    "1e12": "at most 86400",
    "nan": "finite",
    "inf": "finite",
    "": None,  # no route: /enqueue/ is not /enqueue/{seconds}
}
QUEUED = 3000


def test_endpoints_and_bad_input(system_db, start_app):
    app = start_app(system_db)
    health = app.wait_ready()
    assert health == {"status": "ok", "version": "test-v1", "executor_id": "pod-a"}

    workflow_id = app.enqueue(0.2)
    wait_for(lambda: system_db.statuses().get(workflow_id) == "SUCCESS", 30, "the workflow to finish")
    rows_before = len(system_db.statuses())

    for raw, message in BAD_SECONDS.items():
        code, body = app.get(f"/enqueue/{raw}") if raw else (404, {})
        if message is None:
            continue
        assert code == 400, (raw, body)
        assert message in body["error"], (raw, body)
    assert len(system_db.statuses()) == rows_before, "a rejected request enqueued something"

    assert app.get("/metrics/taskQueue") == (200, {"queue_length": 0, "queue_length_exact": True})
    assert app.get("/metrics/noSuchQueue") == (200, {"queue_length": 0, "queue_length_exact": True})
    assert system_db.steps(workflow_id) == ["record_start", "DBOS.sleep", "record_finish"]


BAD_MAX = ["0", "-1", "1.5", "abc", "", "1e3", " 3", "\uff13", str(2 ** 63), "3&max=4"]


def test_metrics_counts_up_to_the_bound_it_is_given(system_db, start_app):
    """?max=N counts at most N waiting workflows: below N the answer is exact, at N a lower bound."""
    app = start_app(system_db, env={"WORKER_CONCURRENCY": "1"})
    app.wait_ready()
    for _ in range(6):
        app.enqueue(3600)
    wait_for(lambda: system_db.count("PENDING") == 1, 30, "one workflow running")
    assert system_db.count("ENQUEUED") == 5
    answers = {limit: app.get(f"/metrics/taskQueue?max={limit}") for limit in (1, 3, 5, 6, 1000, 2 ** 63 - 1)}
    assert answers == {
        1: (200, {"queue_length": 1, "queue_length_exact": False}),
        3: (200, {"queue_length": 3, "queue_length_exact": False}),
        5: (200, {"queue_length": 5, "queue_length_exact": False}),  # 5 waiting: "at least 5"
        6: (200, {"queue_length": 5, "queue_length_exact": True}),
        1000: (200, {"queue_length": 5, "queue_length_exact": True}),
        2 ** 63 - 1: (200, {"queue_length": 5, "queue_length_exact": True}),
    }
    assert app.get("/metrics/taskQueue") == (200, {"queue_length": 5, "queue_length_exact": True})
    for raw in BAD_MAX:
        code, body = app.get(f"/metrics/taskQueue?max={urllib.parse.quote(raw, safe='&=')}")
        assert code == 400, (raw, body)
        assert "max" in body["error"], (raw, body)


# Of a version no running app serves: its workflows stay ENQUEUED. Quoted, to show it is bound, not written in.
UNSERVED = "v2 'unserved'; --"
V2 = urllib.parse.quote(UNSERVED, safe="")
# 4 ENQUEUED of UNSERVED; of test-v1, with one worker slot, 1 PENDING and 2 ENQUEUED
BY_VERSION_AND_STATUS = {
    "": 6,  # ENQUEUED, every version: as before these parameters
    "?statuses=ENQUEUED": 6,
    "?statuses=PENDING": 1,
    "?statuses=ENQUEUED,PENDING": 7,
    "?statuses=PENDING%2CENQUEUED": 7,
    "?version=test-v1": 2,
    "?version=test-v1&statuses=ENQUEUED,PENDING": 3,
    "?statuses=PENDING&version=test-v1": 1,
    f"?version={V2}": 4,
    f"?version={V2}&statuses=ENQUEUED,PENDING": 4,
    f"?version={V2}&statuses=PENDING": 0,
    "?version=v3": 0,
    "?version=test-v1%27%20OR%20%271%27%3D%271": 0,
}
BOUNDED_BY_VERSION_AND_STATUS = {
    f"?version={V2}&statuses=ENQUEUED,PENDING&max=3": (3, False),
    f"?version={V2}&statuses=ENQUEUED,PENDING&max=5": (4, True),
    "?statuses=ENQUEUED,PENDING&max=7": (7, False),
    "?statuses=ENQUEUED,PENDING&max=8": (7, True),
    "?max=2&version=test-v1&statuses=PENDING": (1, True),
}
BAD_PARAMETERS = {
    "statuses=": "statuses must be",
    "statuses=RUNNING": "statuses must be",
    "statuses=DELAYED": "statuses must be",
    "statuses=enqueued": "statuses must be",
    "statuses=ENQUEUED,,PENDING": "statuses must be",
    "statuses=ENQUEUED,ENQUEUED": "statuses must be",
    "statuses=ENQUEUED&statuses=PENDING": "give statuses once",
    "version=": "version must be",
    "version=v%001": "version must be",
    "version=v1&version=v2": "give version once",
    "version=test-v1&statuses=SUCCESS&max=3": "statuses must be",
    "version=test-v1&statuses=PENDING&max=0": "max must be",
    "versions=test-v1": "unknown parameters versions",
    "status=PENDING&limit=3": "unknown parameters limit, status",
}


def test_metrics_counts_per_version_and_status(system_db, start_app):
    """?version= counts one application version, ?statuses= the waiting, running or both, with or
    without ?max=; workflows of a version no app runs stay ENQUEUED, of the app's own one runs."""
    app = start_app(system_db, env={"WORKER_CONCURRENCY": "1"})
    app.wait_ready()
    for _ in range(3):
        app.enqueue(3600)
    client = DBOSClient(system_database_url=system_db.url, application_name=APP_NAME)
    try:
        for _ in range(4):
            client.enqueue({"queue_name": QUEUE_NAME, "workflow_name": "sleep_workflow", "app_version": UNSERVED}, 3600)
    finally:
        client.destroy()
    wait_for(lambda: system_db.count("PENDING") == 1, 30, "one workflow running")
    assert system_db.count("ENQUEUED") == 6
    assert {q: app.get("/metrics/taskQueue" + q) for q in BY_VERSION_AND_STATUS} == {
        q: (200, {"queue_length": n, "queue_length_exact": True}) for q, n in BY_VERSION_AND_STATUS.items()}
    assert {q: app.get("/metrics/taskQueue" + q) for q in BOUNDED_BY_VERSION_AND_STATUS} == {
        q: (200, {"queue_length": n, "queue_length_exact": exact})
        for q, (n, exact) in BOUNDED_BY_VERSION_AND_STATUS.items()}
    assert app.get(f"/metrics/noSuchQueue?version={V2}&statuses=ENQUEUED,PENDING") == \
        (200, {"queue_length": 0, "queue_length_exact": True})
    for query, message in BAD_PARAMETERS.items():
        code, body = app.get(f"/metrics/taskQueue?{query}")
        assert (code, message in body["error"]) == (400, True), (query, body)


def test_start_and_stop_are_logged_as_json(sqlite_db, start_app):
    app = start_app(sqlite_db, env={"WORKER_CONCURRENCY": "3"})
    app.wait_ready()
    assert app.terminate() == 0
    events = {e["event"]: e for e in app.log_events()}
    started = events["started"]
    assert {k: started[k] for k in ("version", "executor_id", "queue", "worker_concurrency")} == \
        {"version": "test-v1", "executor_id": "pod-a", "queue": "taskQueue", "worker_concurrency": 3}
    assert "draining" in events
    assert "stopped" in events


async def test_healthz_and_enqueue_refuse_while_starting_and_draining():
    """Before DBOS has launched and once shutdown has begun, readiness fails and no work is taken."""
    app = make_app(Settings())
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert (resp.status, await resp.json()) == (503, {"status": "starting"})
        resp = await client.get("/enqueue/1")
        assert resp.status == 503
        resp = await client.get("/enqueue/abc")  # input is still checked first
        assert resp.status == 400
        resp = await client.get("/metrics/taskQueue")
        assert resp.status == 503
        for bad in ("max=0", "statuses=RUNNING", "version="):  # input is still checked first
            resp = await client.get(f"/metrics/taskQueue?{bad}")
            assert resp.status == 400, bad

        app[STATE]["phase"] = DRAINING
        resp = await client.get("/healthz")
        assert (resp.status, await resp.json()) == (503, {"status": "draining"})


@pytest.mark.parametrize(("env", "message"), [
    ({"WORKER_CONCURRENCY": "two"}, "WORKER_CONCURRENCY must be a whole number"),
    ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be at least 1"),
    ({"PORT": "70000"}, "PORT must be at most 65535"),
    ({"SHUTDOWN_GRACE_SECONDS": "-5"}, "SHUTDOWN_GRACE_SECONDS must be at least 0"),
    ({"DBOS_RUN_MIGRATIONS": "maybe"}, "DBOS_RUN_MIGRATIONS must be true or false"),
    ({"DBOS_SYSTEM_DATABASE_URL": "mysql://x@y/z"}, "DBOS_SYSTEM_DATABASE_URL: unsupported scheme"),
    ({"DBOS_CONDUCTOR_KEY": "key-1234"}, "DBOS_CONDUCTOR_KEY is set, but Conductor support is not installed"),
    ({"DBOS_CONDUCTOR_URL": "https://conductor"}, "DBOS_CONDUCTOR_URL must start with ws:// or wss://"),
    ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE=/nonexistent/ca.pem is not a readable file"),
])
def test_bad_configuration_is_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_defaults_and_executor_id_from_the_pod_name(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env({"HOSTNAME": "dbos-app-7d9f-x2k", "SSL_CERT_FILE": str(ca)})
    assert settings.executor_id == "dbos-app-7d9f-x2k"
    assert (settings.worker_concurrency, settings.port, settings.system_database_url) == \
        (2, 8080, "sqlite:///dbos-sample-app.sqlite")
    assert Settings.from_env({"HOSTNAME": "a", "DBOS_EXECUTOR_ID": "b"}).executor_id == "b"


def test_settings_never_show_secrets():
    shown = repr(Settings.from_env({"DBOS_SYSTEM_DATABASE_URL": "postgresql://app:pa55word@db:5432/dbos_app"}))
    assert "pa55word" not in shown
    assert "postgresql://app:***@db:5432/dbos_app" in shown


def test_conductor_key_without_the_extension_stops_the_app_at_start(sqlite_db, start_app):
    app = start_app(sqlite_db, env={"DBOS_CONDUCTOR_KEY": "secret-conductor-key-123"})
    assert app.proc.wait(30) == 2
    [error] = [e for e in app.log_events() if e["event"] == "config_error"]
    assert "dbos-enterprise" in error["error"]
    assert "secret-conductor-key-123" not in app.log()


async def test_the_depth_count_reads_the_in_flight_index_when_most_rows_are_queued(postgres_db):
    """A young system with a backlog: nearly every row of workflow_status is ENQUEUED. With the
    planner's default costs PostgreSQL then reads the whole table to count them; the depth source's
    connection reads DBOS's partial index of in-flight workflows instead, for both in-flight statuses
    too; a version filter reads the table's rows too, of the index's matches only."""
    assert dbos_migrate(postgres_db.url).returncode == 0
    client = DBOSClient(system_database_url=postgres_db.url, application_name=APP_NAME)
    try:
        options = {"queue_name": QUEUE_NAME, "workflow_name": "sleep_workflow", "app_version": "v1"}
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: client.enqueue(options, 3600), range(QUEUED)))
    finally:
        client.destroy()
    postgres_db.query("VACUUM (ANALYZE) dbos.workflow_status")
    # the plan for this queue, and the generic plan a prepared statement settles on, for any queue
    query = count_sql(PostgresQueueDepth, None)
    checks = ["EXPLAIN " + query.replace("%s", f"'{QUEUE_NAME}'", 1).replace("%s", f"'{APP_NAME}'"),
              "SET plan_cache_mode = force_generic_plan",
              "PREPARE depth AS " + query.replace("%s", "$1", 1).replace("%s", "$2"),
              f"EXPLAIN EXECUTE depth('noSuchQueue', '{APP_NAME}')"]

    with psycopg.connect(postgres_db.url) as default:
        plans = [plan(cursor.description and cursor.fetchall()) for cursor in map(default.execute, checks)]
    assert ["Seq Scan on workflow_status" in plans[i] for i in (0, 3)] == [True, True], plans
    depth = PostgresQueueDepth(postgres_db.url)
    try:
        assert await depth.count(QUEUE_NAME) == QUEUED
        assert await depth.count("noSuchQueue") == 0
        assert [await depth.count(QUEUE_NAME, limit) for limit in (20, QUEUED, QUEUED + 1)] == [20, QUEUED, QUEUED]
        bounded = count_sql(PostgresQueueDepth, 20).replace("%s", f"'{QUEUE_NAME}'", 1).replace("%s", f"'{APP_NAME}'")
        cursor = await depth.conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + bounded)
        bounded_plan = plan(await cursor.fetchall())
        counts = [(None, IN_FLIGHT_STATUSES, None), (None, ("PENDING",), None), (20, IN_FLIGHT_STATUSES, "v1"),
                  (None, IN_FLIGHT_STATUSES, "v2")]
        assert [await depth.count(QUEUE_NAME, *args) for args in counts] == [QUEUED, 0, 20, 0]
        in_flight = {}
        for limit, version in ((None, None), (20, None), (20, "v1")):
            statement = count_sql(PostgresQueueDepth, limit, IN_FLIGHT_STATUSES, version is not None)
            for value in count_params(QUEUE_NAME, version):
                statement = statement.replace("%s", f"'{value}'", 1)
            cursor = await depth.conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement)
            in_flight[limit, version] = plan(await cursor.fetchall())
        plans = []
        for statement in checks:
            cursor = await depth.conn.execute(statement)
            plans.append(plan(cursor.description and await cursor.fetchall()))
    finally:
        await depth.close()
    assert ["Index Only Scan using idx_workflow_status_in_flight_v2" in plans[i] for i in (0, 3)] == [True, True], plans
    # the bounded count reads 20 index entries of the 3000, not all of them
    assert "Index Only Scan using idx_workflow_status_in_flight_v2" in bounded_plan, bounded_plan
    assert "(actual rows=20 loops=1)" in bounded_plan.split("Index Only Scan", 1)[1].splitlines()[0], bounded_plan
    # ENQUEUED and PENDING: the same index-only scans; with a version, an index scan that reads the
    # table's rows of its 20 entries
    for key, scan, rows in (((None, None), "Index Only Scan", QUEUED), ((20, None), "Index Only Scan", 20),
                            ((20, "v1"), "Index Scan", 20)):
        assert f"{scan} using idx_workflow_status_in_flight_v2" in in_flight[key], in_flight[key]
        assert f"(actual rows={rows} loops=1)" in in_flight[key].split(scan, 1)[1].splitlines()[0], in_flight[key]


def plan(rows: list[tuple] | None) -> str:
    """EXPLAIN's rows as text; empty for a statement that returns none."""
    return "\n".join(row[0] for row in rows or [])
