"""Role dbos.deploy.app on the lab: the Deployment and Service read back and validated offline, and
versioned upgrades decided by real workflow rows in the lab's PostgreSQL."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from dbos import DBOSClient
from kubernetes import client

from lab.ansible_run import AnsibleRunner
from lab.core import REPO
from tests.roles.conftest import controller_mode, handed_on
from tests.roles.manifests import strict_refusals

PLAY = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.app"]}]
RETIRE = REPO / "playbooks" / "retire.yml"
# These tests are about the role's manifests and its roll-out of versions, not about the app running
# (tests/site runs it in its pods): an ECR repository the lab has no image for (lab.kube.images), so
# kwok makes the pods Ready, and pods of a Conductor key and of a CA init container can be tested.
REPOSITORY = "dbos-app-not-run"


@pytest.fixture(scope="module")
def database(migrated_database):
    return migrated_database


@pytest.fixture(scope="module")
def app_vars(kube, database, lab):
    core = client.CoreV1Api(kube)
    namespace = f"app-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    # the app's Secret, as the secrets role leaves it: the count Job reads the restricted role's URL there
    core.create_namespaced_secret(namespace, {"metadata": {"name": "dbos-app-db"}, "stringData": {
        "database-url": database["url"], "password": database["password"]}})
    # (the role's own default for the replicas, not the site's: the tests scale dbos-app themselves)
    return {**handed_on(lab), "app_replicas_from_autoscaler": False,
            "dbos_namespace": namespace, "dbos_worker_concurrency": 3, "app_queue_db_name": database["name"],
            "app_queue_db_user": database["role"], "dbos_db_app_role_password": database["password"],
            "app_conductor_key_secret_name": "conductor-api-key", "app_ecr_repository": REPOSITORY,
            # no rds role here: the lab's PostgreSQL as the count Job's pod reaches it
            "app_queue_db_host": lab.postgres["host"], "app_queue_db_port": lab.postgres["port"],
            "app_queue_db_ssl_mode": "disable"}


@pytest.fixture(scope="module")
def deployed(runner, app_vars):
    result = runner.run(PLAY, extra_vars={**app_vars, "app_version": "v1"})
    assert result.ok, result.explain()
    return result


def deployments(kube, namespace: str) -> dict:
    return {d.metadata.name: d for d in client.AppsV1Api(kube).list_namespaced_deployment(namespace).items}


def test_the_deployment_is_the_guides_with_least_privilege(deployed, kube, app_vars):
    dep = client.AppsV1Api(kube).read_namespaced_deployment("dbos-app", app_vars["dbos_namespace"])
    pod = dep.spec.template.spec
    [app] = pod.containers
    env = {e.name: e for e in app.env}
    refs = {n: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
            for n, e in env.items() if e.value_from and e.value_from.secret_key_ref}
    assert refs == {"DBOS_SYSTEM_DATABASE_URL": ("dbos-app-db", "database-url"),
                    "DBOS_CONDUCTOR_KEY": ("conductor-api-key", "api-key")}
    # the executor id is the pod's name, for the sample app and for any DBOS SDK
    assert env["DBOS_EXECUTOR_ID"].value_from.field_ref.field_path == "metadata.name"
    assert env["DBOS__VMID"].value_from.field_ref.field_path == "metadata.name"
    assert (env["DBOS_APP_VERSION"].value, env["WORKER_CONCURRENCY"].value) == ("v1", "3")
    assert "DBOS_CONDUCTOR_URL" not in env  # managed Conductor
    # Conductor recovers the work of pods that are gone: no reconciler unless asked for
    assert "dbos-app-reconciler" not in deployments(kube, app_vars["dbos_namespace"])
    assert app.readiness_probe.http_get.path == app.liveness_probe.http_get.path == "/healthz"
    assert app.resources.requests == {"cpu": "500m", "memory": "256Mi"}
    assert app.resources.limits == {"cpu": "2", "memory": "512Mi"}
    sc = app.security_context
    assert (sc.run_as_non_root, sc.allow_privilege_escalation, sc.read_only_root_filesystem,
            sc.capabilities.drop) == (True, False, True, ["ALL"])
    assert pod.termination_grace_period_seconds == 35 and env["SHUTDOWN_GRACE_SECONDS"].value == "25"
    assert dep.spec.replicas == 2 and dep.metadata.labels["dbos.dev/app-version"] == "v1"
    assert app.image.endswith(f"/{REPOSITORY}:v1")
    svc = client.CoreV1Api(kube).read_namespaced_service("dbos-app", app_vars["dbos_namespace"])
    assert svc.spec.selector == {"app.kubernetes.io/name": "dbos-app", "dbos.dev/deployment": "dbos-app"}


def test_the_manifests_are_accepted_with_strict_field_validation(deployed, kube):
    assert {obj["kind"] for _, obj in deployed.applied} >= {"Deployment", "Service"}
    assert strict_refusals(kube, deployed.applied) == {}


def test_second_run_changes_nothing(deployed, runner, app_vars):
    again = runner.run(PLAY, extra_vars={**app_vars, "app_version": "v1"})
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_replicas_an_autoscaler_set_are_kept_when_it_owns_them(deployed, runner, kube, app_vars):
    """As KEDA's HPA does, something else scales dbos-app to 5: a run with app_replicas_from_autoscaler
    (the site playbook's setting) keeps 5 and changes nothing; without it, app_replicas wins."""
    apps = client.AppsV1Api(kube)
    namespace = app_vars["dbos_namespace"]
    apps.patch_namespaced_deployment_scale("dbos-app", namespace, {"spec": {"replicas": 5}})
    kept = runner.run(PLAY, extra_vars={**app_vars, "app_version": "v1", "app_replicas_from_autoscaler": True})
    assert kept.ok, kept.explain()
    assert kept.changed == 0, [n for n, r in kept.tasks() if r.get("changed")]
    assert apps.read_namespaced_deployment("dbos-app", namespace).spec.replicas == 5
    reset = runner.run(PLAY, extra_vars={**app_vars, "app_version": "v1"})
    assert reset.ok and reset.changed == 1, reset.explain()
    assert apps.read_namespaced_deployment("dbos-app", namespace).spec.replicas == 2


def test_a_self_signed_conductor_ca_is_trusted_through_an_init_container(deployed, runner, kube, app_vars):
    extra = {**app_vars, "app_version": "v1", "app_name": "ca-app", "app_conductor_ca_secret": "dbos-tls",
             "app_conductor_url": "wss://conductor.example.com/conductor/"}
    result = runner.run(PLAY, extra_vars=extra)
    assert result.ok, result.explain()
    dep = client.AppsV1Api(kube).read_namespaced_deployment("ca-app", app_vars["dbos_namespace"])
    [init] = dep.spec.template.spec.init_containers
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env["SSL_CERT_FILE"] == "/certs/ca-certificates.crt"
    assert env["DBOS_CONDUCTOR_URL"] == "wss://conductor.example.com/conductor/"
    assert "/tls/tls.crt" in init.command[-1]
    volumes = {v.name: v for v in dep.spec.template.spec.volumes}
    assert volumes["conductor-ca"].secret.secret_name == "dbos-tls"
    assert strict_refusals(kube, result.applied) == {}  # the init container's Deployment among them


def enqueue(database, version: str, count: int) -> None:
    dbos = DBOSClient(system_database_url=database["admin_url"])
    try:
        for _ in range(count):
            dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": version}, 60)
    finally:
        dbos.destroy()


def finish(database, version: str) -> None:
    with psycopg.connect(database["admin_url"], autocommit=True) as conn:
        conn.execute("UPDATE dbos.workflow_status SET status = 'SUCCESS' WHERE application_version = %s", (version,))


def upgrade_keeps_the_old_version_while_it_has_work_then_retires_it(runner, kube, app_vars, database, lab, *,
                                                                   versions: tuple[str, str, str]) -> None:
    old_version, new, newer = versions
    ns = app_vars["dbos_namespace"]
    enqueue(database, old_version, 3)
    upgraded = runner.run(PLAY, extra_vars={**app_vars, "app_version": new})
    assert upgraded.ok, upgraded.explain()
    found = deployments(kube, ns)
    assert found["dbos-app"].metadata.labels["dbos.dev/app-version"] == new
    env = {e.name: e.value for e in found["dbos-app"].spec.template.spec.containers[0].env}
    assert env["DBOS_APP_VERSION"] == new
    old = found[f"dbos-app-{old_version}"]
    assert old.metadata.labels["dbos.dev/app-version"] == old_version
    old_env = {e.name: e.value for e in old.spec.template.spec.containers[0].env}
    assert old_env["DBOS_APP_VERSION"] == old_version
    assert old.spec.template.spec.containers[0].image.endswith(f":{old_version}")
    service = client.CoreV1Api(kube).read_namespaced_service("dbos-app", ns)
    assert service.spec.selector["dbos.dev/deployment"] == "dbos-app"
    assert old.spec.template.metadata.labels["dbos.dev/deployment"] == f"dbos-app-{old_version}"
    assert f"dbos-app-{old_version}" in [obj["metadata"]["name"] for _, obj in upgraded.applied]
    assert strict_refusals(kube, upgraded.applied) == {}  # the retained Deployment among them

    still = AnsibleRunner(lab, runner.workdir).run(RETIRE, extra_vars=app_vars)
    assert still.ok, still.explain()
    assert f"dbos-app-{old_version}" in deployments(kube, ns)  # its work is still queued

    finish(database, old_version)
    retired = AnsibleRunner(lab, runner.workdir).run(RETIRE, extra_vars=app_vars)
    assert retired.ok, retired.explain()
    assert f"dbos-app-{old_version}" not in deployments(kube, ns)

    # the new version has no work when the newer comes: none is kept
    v3 = runner.run(PLAY, extra_vars={**app_vars, "app_version": newer})
    assert v3.ok, v3.explain()
    assert sorted(n for n in deployments(kube, ns) if n.startswith("dbos-app")) == ["dbos-app"]


@pytest.mark.usefixtures("deployed")
def test_an_upgrade_keeps_the_old_version_while_it_has_work_counted_by_a_job(runner, kube, app_vars, database, lab):
    """The default: the work per version is counted by a Job in the cluster, whose psql (the lab runs
    the postgres image's) reads the app's database URL from its Secret, as the restricted role."""
    upgrade_keeps_the_old_version_while_it_has_work_then_retires_it(runner, kube, app_vars, database, lab,
                                                                   versions=("v1", "v2", "v3"))
    job = client.BatchV1Api(kube).read_namespaced_job("dbos-app-count-work", app_vars["dbos_namespace"])
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
    [container] = job.spec.template.spec.containers
    refs = [(e.name, e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key)
            for e in container.env if e.value_from]
    assert refs == [("PGPASSWORD", "dbos-app-db", "password")]
    assert database["password"] not in str(container.command) + str(container.args) + str(container.env)


def test_an_upgrade_keeps_the_old_version_while_it_has_work_counted_from_this_machine(runner, kube, app_vars,
                                                                                     database, lab):
    """app_queue_count_from controller: dbos.deploy.queue_depth from this machine, through a tunnel."""
    upgrade_keeps_the_old_version_while_it_has_work_then_retires_it(
        runner, kube, {**app_vars, **controller_mode(lab)}, database, lab, versions=("v3", "v4", "v5"))


def test_a_count_job_that_fails_fails_the_role_with_its_log_and_keeps_the_old_version(runner, kube, app_vars,
                                                                                     database, lab):
    """A database URL the restricted role cannot log in with: the count fails, and the role with it,
    showing psql's error; no version is retired on a count that was not read."""
    ns = app_vars["dbos_namespace"]
    core = client.CoreV1Api(kube)
    core.patch_namespaced_secret("dbos-app-db", ns, {"stringData": {"password": "not-the-password"}})
    try:
        enqueue(database, "v5", 1)
        failed = runner.run(PLAY, extra_vars={**app_vars, "app_version": "v6"})
        assert not failed.ok
        msg = failed.task("Run the count Job")["msg"]
        assert "dbos-app-count-work" in msg and "password authentication failed" in msg, msg
        assert "not-the-password" not in failed.stdout
        assert deployments(kube, ns)["dbos-app"].metadata.labels["dbos.dev/app-version"] == "v5"
    finally:
        core.patch_namespaced_secret("dbos-app-db", ns, {"stringData": {"password": database["password"]}})
        finish(database, "v5")


def test_building_the_image_needs_a_docker_engine_and_stops_before_the_cluster(runner, app_vars, kube):
    """No Docker engine here: the ECR credentials are fetched (from the lab's ECR), the login to a
    Docker engine fails, and nothing is deployed."""
    result = runner.run(PLAY, extra_vars={**app_vars, "app_name": "built-app", "app_build_image": True})
    assert not result.ok
    assert result.task("Get Docker credentials for ECR").get("failed") is not True
    [failed] = [n for n, r in result.tasks() if r.get("failed")]
    assert failed.endswith("Log in to ECR")
    assert "built-app" not in deployments(kube, app_vars["dbos_namespace"])


@pytest.mark.parametrize(("extra", "name"), [
    ({"app_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dbos-app"}, "app_image"),
    ({"dbos_worker_concurrency": "two"}, "dbos_worker_concurrency"),
    ({"app_replicas": 0}, "app_replicas"),
    ({"app_shutdown_grace_seconds": 40},
     "app_termination_grace_seconds (35) must be more than app_shutdown_grace_seconds (40)"),
    ({"app_termination_grace_seconds": "soon"}, "app_termination_grace_seconds"),
    ({"app_reconciler_interval_seconds": -5}, "app_reconciler_interval_seconds must be at least 0.1"),
    ({"app_reconciler_interval_seconds": 0}, "app_reconciler_interval_seconds must be at least 0.1"),
    ({"app_reconciler_interval_seconds": 14}, "app_reconciler_interval_seconds (14) must be less than"),
    ({"app_reconciler_lease_seconds": 2}, "app_reconciler_lease_seconds must be at least 3"),
    ({"app_reconciler_image": "dbos-reconciler:0.1.0"}, "app_reconciler_image must name its registry"),
])
def test_bad_input_fails_naming_the_variable(runner, app_vars, kube, extra, name):
    result = runner.run(PLAY, extra_vars={**app_vars, "app_name": "bad-app", **extra})
    assert not result.ok and name in result.explain()
    assert "bad-app" not in deployments(kube, app_vars["dbos_namespace"])


def test_check_mode_changes_nothing(deployed, runner, kube, app_vars):
    ns = app_vars["dbos_namespace"]
    before = {n: d.metadata.resource_version for n, d in deployments(kube, ns).items()}
    same = runner.run(PLAY, check=True, extra_vars={**app_vars, "app_version": deployments(kube, ns)["dbos-app"]
                                                    .metadata.labels["dbos.dev/app-version"]})
    assert same.ok, same.explain()
    assert same.changed == 0
    upgrade = runner.run(PLAY, check=True, extra_vars={**app_vars, "app_version": "v9"})
    assert upgrade.ok, upgrade.explain()
    assert upgrade.changed > 0  # the rollout it would do
    assert {n: d.metadata.resource_version for n, d in deployments(kube, ns).items()} == before
