"""The sample app's durability, drain, least privilege and queue depth, with real workflows."""

from __future__ import annotations

import secrets
import time

import psycopg
import pytest
from psycopg import sql

from tests.sample_app.harness import dbos_migrate, wait_for

EXPECTED_STEPS = ["record_start", "DBOS.sleep", "record_finish"]


def _sleeping(db, ids) -> list[str]:
    """Workflows that are PENDING and have begun their durable sleep."""
    statuses = db.statuses()
    return [i for i in ids if statuses.get(i) == "PENDING" and "DBOS.sleep" in db.steps(i)]


def test_kill_9_mid_workflow_then_restart_with_the_same_executor_id(system_db, start_app):
    app = start_app(system_db, env={"WORKER_CONCURRENCY": "2"})
    app.wait_ready()
    ids = [app.enqueue(3) for _ in range(4)]
    wait_for(lambda: len(_sleeping(system_db, ids)) == 2, 30, "two workflows sleeping")

    app.kill()  # SIGKILL: no drain, no cleanup
    statuses = system_db.statuses()
    assert sorted(statuses[i] for i in ids) == ["ENQUEUED", "ENQUEUED", "PENDING", "PENDING"]

    restarted = start_app(system_db, executor_id="pod-a")
    restarted.wait_ready()
    wait_for(lambda: all(system_db.statuses().get(i) == "SUCCESS" for i in ids), 60, "every workflow to finish")

    # exactly once: each workflow ran each step once, the interrupted ones included
    assert {i: system_db.steps(i) for i in ids} == {i: EXPECTED_STEPS for i in ids}
    assert system_db.count("SUCCESS") == 4


@pytest.mark.parametrize("db_kind", ["postgres"])
def test_sigterm_drains_running_work_and_leaves_queued_work(db_kind, request, start_app):
    db = request.getfixturevalue(f"{db_kind}_db")
    app = start_app(db, env={"WORKER_CONCURRENCY": "2", "SHUTDOWN_GRACE_SECONDS": "20"})
    app.wait_ready()
    ids = [app.enqueue(3) for _ in range(4)]
    running = wait_for(lambda: (s := _sleeping(db, ids)) and len(s) == 2 and s, 30, "two workflows sleeping")

    app.proc.send_signal(15)
    seen_draining = wait_for(lambda: app.get("/healthz", timeout=2) == (503, {"status": "draining"}), 10,
                             "readiness to fail while draining", interval=0.05)
    assert seen_draining
    assert app.proc.wait(40) == 0

    statuses = db.statuses()
    queued = [i for i in ids if i not in running]
    assert [statuses[i] for i in running] == ["SUCCESS", "SUCCESS"]
    assert [statuses[i] for i in queued] == ["ENQUEUED", "ENQUEUED"]
    events = [e["event"] for e in app.log_events()]
    assert events[-2:] == ["draining", "stopped"]


def test_runs_as_a_restricted_role_after_dbos_migrate(postgres_db, lab, start_app):
    role, password = f"app_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    admin = psycopg.connect(lab.postgres["admin_url"], autocommit=True)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    try:
        migrated = dbos_migrate(postgres_db.admin_url, app_role=role)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        pg = lab.postgres
        role_url = f"postgresql://{role}:{password}@{pg['host']}:{pg['port']}/{postgres_db.admin_url.rsplit('/', 1)[1]}"

        app = start_app(role_url, env={"DBOS_RUN_MIGRATIONS": "false"})
        app.wait_ready()
        workflow_id = app.enqueue(0.2)
        wait_for(lambda: postgres_db.statuses().get(workflow_id) == "SUCCESS", 30, "the workflow to finish")
        assert app.get("/metrics/taskQueue") == (200, {"queue_length": 0, "queue_length_exact": True})
        assert app.terminate() == 0

        refused = [
            "CREATE TABLE dbos.intruder (x int)",
            "ALTER TABLE dbos.workflow_status ADD COLUMN intruder int",
            "DROP TABLE dbos.operation_outputs",
            "CREATE INDEX intruder ON dbos.workflow_status (status)",
            "DROP SCHEMA dbos CASCADE",
        ]
        with psycopg.connect(role_url, autocommit=True) as conn:
            for statement in refused:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            owner = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'dbos' "
                                 "AND tablename = 'workflow_status'").fetchone()[0]
        assert owner != role
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(postgres_db.admin_url.rsplit("/", 1)[1])))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


def test_metrics_equal_the_enqueued_rows_while_the_queue_drains(system_db, start_app):
    app = start_app(system_db, env={"WORKER_CONCURRENCY": "2"})
    app.wait_ready()
    for _ in range(8):
        app.enqueue(0.5)
    observed = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = system_db.count("ENQUEUED")
        _, body = app.get("/metrics/taskQueue")
        after = system_db.count("ENQUEUED")
        # nothing is enqueued meanwhile, so the true count can only fall: the answer lies between
        assert after <= body["queue_length"] <= before
        observed.append(body["queue_length"])
        if before == 0:
            break
        time.sleep(0.1)
    assert observed[-1] == 0
    assert len(set(observed)) >= 3, observed  # it followed the queue down, not just 0
