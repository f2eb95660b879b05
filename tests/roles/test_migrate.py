"""Role dbos.deploy.migrate on the lab: as a Job, whose container (the migration image's ``dbos
migrate``) the lab runs against its PostgreSQL, reached as RDS serves it, and the real Job controller
finishes; and from the control node (controller mode)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from dbos import DBOSClient
from kubernetes import client

from tests.roles.conftest import admin_secret, controller_mode, handed_on
from tests.roles.manifests import strict_refusals
from tests.sample_app.harness import create_login_role, create_postgres_database, drop_postgres_database, drop_role

PLAY = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.migrate"]}]


@pytest.fixture(scope="module")
def database(lab):
    """A fresh database and a restricted login role, as the rds role leaves them."""
    admin = lab.postgres["admin_url"]
    name, _ = create_postgres_database(admin)
    role, password = create_login_role(admin)
    pg = lab.postgres
    yield {"name": name, "role": role, "url": f"postgresql://{role}:{password}@{pg['host']}:{pg['port']}/{name}"}
    drop_postgres_database(admin, name)
    drop_role(admin, role)


@pytest.fixture(scope="module")
def migrated(runner, database, namespace, lab):
    extra = {**controller_mode(lab), "dbos_namespace": namespace, "migrate_database_name": database["name"],
             "migrate_app_role": database["role"]}
    result = runner.run(PLAY, extra_vars=extra, verbosity=3, json_output=False)
    assert result.ok, result.stdout[-3000:]
    return result, extra


def test_controller_mode_creates_the_tables_and_the_restricted_role_can_use_them(migrated, database, lab):
    result, _ = migrated
    assert "changed: [localhost]" in result.stdout
    assert lab.postgres["password"] not in result.stdout + result.stderr
    dbos = DBOSClient(system_database_url=database["url"])
    try:  # the restricted role writes workflow rows through DBOS
        handle = dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow"}, 1)
        assert dbos.retrieve_workflow(handle.workflow_id).get_status().status == "ENQUEUED"
    finally:
        dbos.destroy()
    with psycopg.connect(database["url"], autocommit=True) as conn:
        for statement in ("CREATE TABLE dbos.intruder (x int)", "ALTER TABLE dbos.workflow_status ADD COLUMN x int",
                          "DROP TABLE dbos.workflow_status"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_controller_mode_second_run_changes_nothing(migrated, runner):
    _, extra = migrated
    again = runner.run(PLAY, extra_vars=extra)
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


JOB = "dbos-migrate-3-4-0"


def front_url(lab, database: str, password: str | None = None) -> str:
    """The admin URL as the secrets role seals it, to the lab's PostgreSQL as RDS serves it (TLS on
    port 5432 of its own address)."""
    pg, front = lab.postgres, lab.postgres["front"]
    return (f"postgresql://{pg['user']}:{password or pg['password']}@{front['host']}:{front['port']}/{database}"
            "?sslmode=require")


@pytest.fixture(scope="module")
def job_database(lab):
    """A fresh database and restricted role for the Job to migrate."""
    admin = lab.postgres["admin_url"]
    name, admin_db_url = create_postgres_database(admin)
    role, password = create_login_role(admin)
    yield {"name": name, "role": role, "admin_url": admin_db_url,
           "url": f"postgresql://{role}:{password}@{lab.postgres['host']}:{lab.postgres['port']}/{name}"}
    drop_postgres_database(admin, name)
    drop_role(admin, role)


@pytest.fixture(scope="module")
def job_namespace(kube):
    """A namespace of the Job tests' own: its postgres-admin Secret is theirs."""
    name = f"migrate-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def job_run(runner, job_namespace, kube, lab, job_database):
    namespace = job_namespace
    admin_secret(kube, namespace, front_url(lab, job_database["name"]))
    extra = {**handed_on(lab), "dbos_namespace": namespace, "migrate_app_role": job_database["role"]}
    result = runner.run(PLAY, extra_vars=extra)
    assert result.ok, result.explain()
    return result, extra


def test_job_mode_runs_dbos_migrate_in_a_job_reading_the_admin_url_from_the_secret(job_run, kube, job_namespace,
                                                                                   job_database):
    namespace = job_namespace
    result, _ = job_run
    job = client.BatchV1Api(kube).read_namespaced_job(JOB, namespace)
    [container] = job.spec.template.spec.containers
    assert container.args == ["migrate", "--app-role", job_database["role"], "--schema", "dbos"]
    [env] = container.env
    assert (env.name, env.value, env.value_from.secret_key_ref.name, env.value_from.secret_key_ref.key) == (
        "DBOS_SYSTEM_DATABASE_URL", None, "postgres-admin", "database-url")
    assert container.image.endswith("/dbos-migrate:3.4.0")
    assert job.spec.ttl_seconds_after_finished == 86400 and job.spec.template.spec.restart_policy == "Never"
    assert any(c.type == "Complete" for c in job.status.conditions)
    # its container ran: exit code 0, and the log the role shows is dbos migrate's own
    [pod] = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"job-name={JOB}").items
    assert pod.status.phase == "Succeeded" and pod.status.container_statuses[0].state.terminated.exit_code == 0
    log = result.task("Show the Job's logs")["msg"]
    assert log[0] == "Starting DBOS migrations", log[:3]
    assert any("Applying DBOS system database schema migration" in line for line in log), log
    assert not any(job_database["admin_url"].split("@")[0].rsplit(":", 1)[-1] in line for line in log)
    record = client.CoreV1Api(kube).read_namespaced_config_map("dbos-migrations", namespace)
    assert JOB in record.data
    # the restricted role writes through DBOS and changes no table
    dbos = DBOSClient(system_database_url=job_database["url"])
    try:
        handle = dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow"}, 1)
        assert dbos.retrieve_workflow(handle.workflow_id).get_status().status == "ENQUEUED"
    finally:
        dbos.destroy()
    with psycopg.connect(job_database["url"], autocommit=True) as conn, pytest.raises(
            psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE TABLE dbos.intruder (x int)")


def test_what_the_role_applies_is_accepted_with_strict_field_validation(job_run, kube):
    """The migration's record, applied through kubernetes.core.k8s, submitted again with strict field
    validation; the Job itself is created strict by dbos.deploy.job_run (tests/modules/test_job_run.py
    has the refusal)."""
    result, _ = job_run
    assert [obj["kind"] for _, obj in result.applied] == ["ConfigMap"]
    assert strict_refusals(kube, result.applied) == {}


def test_job_mode_rerun_creates_no_new_job(job_run, runner, kube, job_namespace):
    namespace = job_namespace
    _, extra = job_run
    uid = client.BatchV1Api(kube).read_namespaced_job(JOB, namespace).metadata.uid
    again = runner.run(PLAY, extra_vars=extra)
    assert again.ok, again.explain()
    assert again.changed == 0
    assert client.BatchV1Api(kube).read_namespaced_job(JOB, namespace).metadata.uid == uid


def test_a_failing_job_fails_the_role_with_its_real_log_and_leaves_nothing_half_made(job_run, runner, kube,
                                                                                    job_namespace, lab):
    """A bad admin password in the Secret: ``dbos migrate`` cannot log in, its pod exits 1, the real
    Job controller fails the Job, and the role fails with the container's own log; no migration is
    recorded and the database is left as it was."""
    namespace = job_namespace
    _, extra = job_run
    admin = lab.postgres["admin_url"]
    name, admin_db_url = create_postgres_database(admin)
    try:
        admin_secret(kube, namespace, front_url(lab, name, password="not-the-admin-password"))
        failed = runner.run(PLAY, extra_vars={**extra, "migrate_dbos_version": "9.9.9", "migrate_backoff_limit": 0})
        assert not failed.ok
        msg = failed.task("Run the migration Job")["msg"]
        assert "dbos-migrate-9-9-9 failed" in msg and "BackoffLimitExceeded" in msg, msg
        assert 'password authentication failed for user "postgres"' in msg, msg
        assert "not-the-admin-password" not in msg
        core = client.CoreV1Api(kube)
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=dbos-migrate-9-9-9").items
        assert pods and {p.status.container_statuses[0].state.terminated.exit_code for p in pods} == {1}
        assert "dbos-migrate-9-9-9" not in (core.read_namespaced_config_map("dbos-migrations", namespace).data or {})
        with psycopg.connect(admin_db_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'dbos'").fetchone() == (0,)
    finally:
        admin_secret(kube, namespace, front_url(lab, "postgres"))
        drop_postgres_database(admin, name)


@pytest.mark.parametrize(("extra", "name"), [
    ({"migrate_dbos_version": "not a version"}, "migrate_dbos_version"),
    ({"migrate_image": "dbos-migrate"}, "migrate_image"),
    ({"migrate_run_from": "laptop"}, "migrate_run_from"),
])
def test_bad_input_fails_naming_the_variable(runner, namespace, extra, name):
    result = runner.run(PLAY, extra_vars={"dbos_namespace": namespace, **extra})
    assert not result.ok and name in result.explain()
    assert not any(n.endswith("Run the migration Job") or n.endswith("Run dbos migrate from the control node")
                   for n, _ in result.tasks())


def test_check_mode_runs_no_migration(runner, lab, kube, namespace):
    """Controller mode on a fresh database: check mode reports the run it would do and creates nothing;
    Job mode creates no Job."""
    admin = lab.postgres["admin_url"]
    name, admin_db_url = create_postgres_database(admin)
    try:
        preview = runner.run(PLAY, check=True, extra_vars={**controller_mode(lab), "dbos_namespace": namespace,
                                                           "migrate_database_name": name,
                                                           "migrate_app_role": "dbos_app_role"})
        assert preview.ok, preview.explain()
        with psycopg.connect(admin_db_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'dbos'").fetchone() == (0,)
        job_vars = {**handed_on(lab), "dbos_namespace": namespace, "migrate_dbos_version": "8.8.8"}
        job_preview = runner.run(PLAY, check=True, extra_vars=job_vars)
        assert job_preview.ok, job_preview.explain()
        assert job_preview.task("Run the migration Job")["changed"]
        names = [j.metadata.name for j in client.BatchV1Api(kube).list_namespaced_job(namespace).items]
        assert "dbos-migrate-8-8-8" not in names
    finally:
        drop_postgres_database(admin, name)
