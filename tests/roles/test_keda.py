"""Role dbos.deploy.keda and playbooks/scale_report.yml on the lab: the ScaledObject read back and
validated against KEDA's CRD schema, the HPA check against the real KEDA operator (accepting a
ScaledObject, and refusing one), the postgresql trigger's read-only role on the lab's real PostgreSQL,
and the scaling arithmetic with the real sample app holding real work."""

from __future__ import annotations

import base64
import re
import secrets
import urllib.parse
import uuid

import psycopg
import pytest
from dbos import DBOSClient
from dbos_sample_app.settings import APP_NAME, QUEUE_NAME
from kubernetes import client

from lab.ansible_run import STRATEGIES
from lab.core import REPO
from tests.roles.conftest import admin_secret, controller_mode, handed_on, queue_db_tunnel
from tests.roles.manifests import strict_refusals
from tests.sample_app.harness import (
    wait_for,
)

PLAY = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.keda"]}]
SCALE_REPORT = REPO / "playbooks" / "scale_report.yml"
SCALED_OBJECT = "dbos-app-scaledobject"
CONCURRENCY = 3
# The metrics-api trigger scrapes the app's pods through their Service; the Deployment these tests
# scale runs an image the lab does not run (kwok makes its pods Ready, with nothing to scrape), so
# KEDA cannot read that trigger here and the role is told not to check the HPA. The check itself is
# tested here with the postgresql trigger, and with metrics-api on the lab's running app in tests/site.
NOT_VERIFIED = {"keda_verify_hpa": False}
# Of a version no running app serves: its workflows stay ENQUEUED.
UNSERVED = "v2 'unserved'/rc"


@pytest.fixture(scope="module")
def database(migrated_database):
    return migrated_database


@pytest.fixture(scope="module")
def keda_ns(kube):
    return target_namespace(kube)


def target_namespace(kube) -> str:
    """A namespace with the Deployment the ScaledObjects scale (as the app role leaves it; of an image
    the lab does not run, so kwok makes its pods Ready): KEDA refuses a ScaledObject whose target
    does not exist."""
    namespace = f"keda-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
    labels = {"app.kubernetes.io/name": "dbos-app"}
    client.AppsV1Api(kube).create_namespaced_deployment(namespace, {
        "metadata": {"name": "dbos-app"}, "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "lab.invalid/not-run:1"}]}}}})
    return namespace


def scaled_object(kube, namespace: str, name: str = SCALED_OBJECT) -> dict:
    return client.CustomObjectsApi(kube).get_namespaced_custom_object("keda.sh", "v1alpha1", namespace,
                                                                      "scaledobjects", name)


@pytest.fixture(scope="module")
def addons(runner):
    """Sealed Secrets and KEDA, as the addons role installs them (the lab's local charts), their
    controllers running."""
    result = runner.run([{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.addons"]}])
    assert result.ok, result.explain()


# --- metrics-api, the guide's trigger --------------------------------------------------------------

@pytest.fixture(scope="module")
def metrics_api(runner, keda_ns):
    extra = {"dbos_namespace": keda_ns, "dbos_worker_concurrency": CONCURRENCY, **NOT_VERIFIED}
    result = runner.run(PLAY, extra_vars=extra)
    assert result.ok, result.explain()
    return result, extra


def test_metrics_api_scaled_object_is_the_guides_and_validates(metrics_api, kube, keda_ns):
    result, _ = metrics_api
    assert "ScaledObject" in {o["kind"] for _, o in result.applied}
    assert strict_refusals(kube, result.applied) == {}
    obj = scaled_object(kube, keda_ns)
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dbos-app"}
    assert (spec["pollingInterval"], spec["cooldownPeriod"], spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        15, 60, 1, 10)
    # scale-in: pods go only when every count over 300 s asked for fewer; an unreadable metric holds them
    assert spec["advanced"] == {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
        "stabilizationWindowSeconds": 300}}}}
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    assert spec["triggers"] == [{"type": "metrics-api", "metricType": "AverageValue", "metadata": {
        # waiting and running work (keda_statuses), counted up to maxReplicaCount x targetValue: past it
        # the answer is maxReplicaCount anyway
        "url": f"http://dbos-app.{keda_ns}.svc.cluster.local:8080/metrics/taskQueue?statuses=ENQUEUED,PENDING"
               f"&max={10 * CONCURRENCY}",
        "valueLocation": "queue_length",
        "targetValue": str(CONCURRENCY)}}]  # the app's concurrency variable, not a number of the role's own


def test_each_version_scales_on_its_own_work_and_a_retired_versions_scaledobject_goes_with_it(runner, kube):
    """The app role's current Deployment (version 3) and a retained one (version 2): one ScaledObject each,
    each counting its own version's work, the retained one from 0 and owned by its Deployment, so that
    the real garbage collector deletes it with the Deployment (as the app role's retire does)."""
    namespace = target_namespace(kube)
    apps = client.AppsV1Api(kube)
    apps.patch_namespaced_deployment("dbos-app", namespace, {"metadata": {"labels": {  # as the app role labels it
        "app.kubernetes.io/name": "dbos-app", "dbos.dev/app-version": "3"}}})
    labels = {"app.kubernetes.io/name": "dbos-app", "dbos.dev/deployment": "dbos-app-2"}
    kept = {**labels, "dbos.dev/app-version": "2", "dbos.dev/retained": "true"}
    container = {"name": "app", "image": "lab.invalid/not-run:2"}
    retained = apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "dbos-app-2", "labels": kept},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [container]}}}})
    extra = {"dbos_namespace": namespace, "dbos_worker_concurrency": CONCURRENCY, **NOT_VERIFIED}
    result = runner.run(PLAY, extra_vars=extra)
    assert result.ok, result.explain()

    def trigger_url(name):
        [trigger] = scaled_object(kube, namespace, name)["spec"]["triggers"]
        return urllib.parse.urlsplit(trigger["metadata"]["url"]).query

    assert trigger_url(SCALED_OBJECT) == "version=3&statuses=ENQUEUED,PENDING&max=30"
    old = scaled_object(kube, namespace, "dbos-app-2-scaledobject")
    assert trigger_url("dbos-app-2-scaledobject") == "version=2&statuses=ENQUEUED,PENDING&max=30"
    assert (old["spec"]["scaleTargetRef"]["name"], old["spec"]["minReplicaCount"]) == ("dbos-app-2", 0)
    assert [(o["kind"], o["name"], o["uid"]) for o in old["metadata"]["ownerReferences"]] == [
        ("Deployment", "dbos-app-2", retained.metadata.uid)]
    again = runner.run(PLAY, extra_vars=extra)
    assert again.ok and again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]

    apps.delete_namespaced_deployment("dbos-app-2", namespace)  # retired

    def collected():
        try:
            scaled_object(kube, namespace, "dbos-app-2-scaledobject")
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_for(collected, 60, "the garbage collector to delete the retired version's ScaledObject")
    assert trigger_url(SCALED_OBJECT) == "version=3&statuses=ENQUEUED,PENDING&max=30"


def test_metrics_api_says_the_hpa_was_not_checked(metrics_api):
    result, _ = metrics_api
    msg = result.task("Say that the HPA was not checked")["msg"]
    assert "keda_verify_hpa is false" in msg and "keda-hpa-dbos-app-scaledobject" in msg


def test_second_run_and_check_mode_change_nothing(metrics_api, runner):
    _, extra = metrics_api
    for check in (False, True):
        again = runner.run(PLAY, extra_vars=extra, check=check)
        assert again.ok, again.explain()
        assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_one_trigger_per_queue(runner, kube, keda_ns):
    name = "multi-queue"
    result = runner.run(PLAY, extra_vars={"dbos_namespace": keda_ns, "dbos_worker_concurrency": 2, **NOT_VERIFIED,
                                          "keda_scaledobject_name": name,
                                          "keda_queues": ["taskQueue", "emails high/low"]})
    assert result.ok, result.explain()
    assert strict_refusals(kube, result.applied) == {}
    obj = scaled_object(kube, keda_ns, name)
    assert [t["metadata"]["url"].rsplit("/metrics/", 1)[1] for t in obj["spec"]["triggers"]] == [
        "taskQueue?statuses=ENQUEUED,PENDING&max=20", "emails%20high%2Flow?statuses=ENQUEUED,PENDING&max=20"]


def test_an_endpoint_without_a_bound_parameter(runner, kube, keda_ns):
    name = "no-bound"
    result = runner.run(PLAY, extra_vars={"dbos_namespace": keda_ns, "dbos_worker_concurrency": 2, **NOT_VERIFIED,
                                          "keda_scaledobject_name": name, "keda_metrics_bound_parameter": "",
                                          "keda_metrics_path": "/depth"})
    assert result.ok, result.explain()
    [trigger] = scaled_object(kube, keda_ns, name)["spec"]["triggers"]
    assert trigger["metadata"]["url"] == \
        f"http://dbos-app.{keda_ns}.svc.cluster.local:8080/depth/taskQueue?statuses=ENQUEUED,PENDING"


@pytest.mark.parametrize(("extra", "message"), [
    ({"keda_min_replicas": 4, "keda_max_replicas": 2}, "keda_min_replicas (4) is above keda_max_replicas (2)"),
    ({"keda_min_replicas": 0}, "keda_min_replicas is 0, but the metrics-api trigger reads the queue from the app's"),
    ({"keda_queues": ["taskQueue", "_dbos_internal"]},
     'keda_queues holds names DBOS does not accept for a queue: ["_dbos_internal"]'),
    ({"keda_queues": [""]}, "keda_queues holds names DBOS does not accept"),
    ({"keda_trigger": "postgresql", "keda_db_host": "db.example"},
     "keda_trigger postgresql needs dbos_db_queue_reader_password"),
    ({"keda_max_replicas": "ten"}, "keda_max_replicas"),
    ({"keda_metrics_bound_parameter": "max&x"}, 'keda_metrics_bound_parameter must be a plain query parameter name'),
    ({"keda_metrics_bound_parameter": "version"}, "and not version or statuses"),
    ({"keda_statuses": []}, "keda_statuses must be a non-empty list of ENQUEUED and PENDING, each once, got []"),
    ({"keda_statuses": ["ENQUEUED", "ENQUEUED"]}, "keda_statuses must be a non-empty list"),
    ({"keda_statuses": ["ENQUEUED", "DELAYED"]}, "keda_statuses"),
    ({"keda_statuses": "ENQUEUED"}, 'keda_statuses must be a list, got the string "ENQUEUED"'),
    ({"keda_application_version": "v1\n"}, "keda_application_version must be a version string without control"),
    ({"keda_application_version": 1.1}, "keda_application_version must be a version string"),
    ({"keda_application_version": "v1"}, "keda_application_version (\"v1\") is for keda_scale_per_version false"),
    ({"keda_retained_min_replicas": -1}, "keda_retained_min_replicas must be a whole number from 0 to keda_max"),
    ({"keda_retained_min_replicas": 11}, "keda_retained_min_replicas must be a whole number from 0"),
    ({"keda_statuses": ["ENQUEUED"]}, "leaves PENDING out, so an older version whose workflows are"),
    ({"keda_trigger": "prometheus"}, "keda_trigger"),
    ({"app_termination_grace_seconds": 400},
     "keda_scale_down_stabilization_seconds (300) is shorter than the app's app_termination_grace_seconds (400)"),
])
def test_bad_input_fails_before_any_change_naming_the_variable(runner, kube, extra, message):
    namespace = f"keda-bad-{uuid.uuid4().hex[:6]}"  # does not exist: nothing may be applied there
    result = runner.run(PLAY, extra_vars={"dbos_namespace": namespace, "dbos_worker_concurrency": 2,
                                          "dbos_db_queue_reader_password": "", **extra})
    assert not result.ok
    assert message in result.explain()
    assert result.changed == 0


# --- postgresql: scale to zero ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgresql(addons, runner, keda_ns, database, lab):
    """The role with the postgresql trigger, at -vvv with the strategy ansible.cfg selects."""
    return first_postgresql_run(runner, lab, database, keda_ns)


def first_postgresql_run(runner, lab, database, namespace, *, env=None, sealed_dir=None) -> dict:
    """A first run of the role with the postgresql trigger into ``namespace``, at -vvv, the reader role
    (a new one of the test's own) created from this machine (controller mode)."""
    role, password = f"reader_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18) + "/:@?#%+&="
    database["roles"].append(role)
    extra = {**controller_mode(lab), **handed_on(lab), "dbos_namespace": namespace,
             "dbos_worker_concurrency": CONCURRENCY, "keda_trigger": "postgresql", "keda_min_replicas": 0,
             "keda_scaledobject_name": "to-zero",
             # the lab's PostgreSQL as RDS serves it (TLS, port 5432 of its own address): where KEDA connects
             "keda_db_host": lab.postgres["front"]["host"], "keda_db_name": database["name"],
             "keda_reader_role": role, "dbos_db_queue_reader_password": password,
             **({"secrets_sealed_dir": str(sealed_dir)} if sealed_dir else {})}
    result = runner.run(PLAY, extra_vars=extra, verbosity=3, json_output=False, env=env)
    assert result.ok, result.stdout[-3000:]
    return {"result": result, "extra": extra, "namespace": namespace, "database": database, "role": role, "lab": lab,
            "password": password, "sealed_dir": sealed_dir or lab.dir / "sealed-secrets",
            "reader_url": reader_url(lab, role, password, database)}


def reader_url(lab, role: str, password: str, database: dict) -> str:
    pg = lab.postgres
    return psycopg.conninfo.make_conninfo(host=pg["host"], port=pg["port"], dbname=database["name"], user=role,
                                          password=password)


def trigger_query(kube, pg: dict) -> str:
    [trigger] = scaled_object(kube, pg["namespace"], "to-zero")["spec"]["triggers"]
    return trigger["metadata"]["query"]


def test_postgresql_trigger_uses_the_modules_query_through_a_trigger_authentication(postgresql, kube):
    obj = scaled_object(kube, postgresql["namespace"], "to-zero")
    auth = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        "keda.sh", "v1alpha1", postgresql["namespace"], "triggerauthentications", "dbos-queue-reader")
    applied = postgresql["result"].applied
    assert {"ScaledObject", "TriggerAuthentication"} <= {o["kind"] for _, o in applied}
    assert strict_refusals(kube, applied) == {}
    assert obj["spec"]["minReplicaCount"] == 0
    [trigger] = obj["spec"]["triggers"]
    assert trigger == {"type": "postgresql", "metricType": "AverageValue",
                       "authenticationRef": {"name": "dbos-queue-reader"}, "metadata": {
        "query": "SELECT count(*) FROM (SELECT 1 FROM \"dbos\".workflow_status WHERE queue_name = 'taskQueue' "
                 "AND status IN ('ENQUEUED', 'PENDING') ORDER BY status, priority, created_at "
                 f"LIMIT {10 * CONCURRENCY}) AS bounded",
        "targetQueryValue": str(CONCURRENCY)}}
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "dbos-queue-reader", "key": "database-url"}]


def test_postgresql_connection_string_is_sealed_and_unsealed(postgresql, kube):
    pg = postgresql
    secret = client.CoreV1Api(kube).read_namespaced_secret("dbos-queue-reader", pg["namespace"])
    assert secret.metadata.owner_references[0].kind == "SealedSecret"
    url = base64.b64decode(secret.data["database-url"]).decode()
    assert base64.b64decode(secret.data["password"]).decode() == pg["password"]
    front = pg["lab"].postgres["front"]
    assert url.startswith(f"postgresql://{pg['role']}:") and url.endswith(
        f"@{front['host']}:5432/{pg['database']['name']}?sslmode=require")
    sealed = (pg["sealed_dir"] / "dbos-queue-reader.yaml").read_text()
    assert "SealedSecret" in sealed and pg["password"] not in sealed


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_first_run_at_vvv_shows_no_password(postgresql, runner, kube, tmp_path, strategy):
    """The fixture's run is the one of the strategy ansible.cfg selects; ansible's linear makes a first
    run of its own, into a namespace and with a reader role of its own."""
    pg = postgresql if strategy == "mitogen_linear" else first_postgresql_run(
        runner, postgresql["lab"], postgresql["database"], target_namespace(kube), env=STRATEGIES[strategy],
        sealed_dir=tmp_path / "sealed")
    run = pg["result"]
    assert run.verbose_strategy() == strategy, run.stdout[:3000]
    assert "Create the read-only role" in run.stdout, run.stdout[-3000:]  # the tasks that see it ran
    assert pg["password"] not in run.stdout + run.stderr


def test_reader_can_run_the_trigger_query_and_nothing_else(postgresql, kube):
    with psycopg.connect(postgresql["reader_url"], autocommit=True) as conn:
        assert conn.execute(trigger_query(kube, postgresql)).fetchone() == (0,)
        for statement in (
            "INSERT INTO dbos.workflow_status (workflow_uuid, status) VALUES ('x', 'ENQUEUED')",
            "UPDATE dbos.workflow_status SET status = 'ERROR'",
            "DELETE FROM dbos.workflow_status",
            "SELECT count(*) FROM dbos.operation_outputs",
            "CREATE TABLE dbos.intruder (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_postgresql_second_run_changes_nothing(postgresql, runner):
    again = runner.run(PLAY, extra_vars=postgresql["extra"])
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


# --- the HPA check, by the real KEDA ------------------------------------------------------------------

def test_keda_accepts_the_postgresql_scaled_object_and_makes_its_hpa(postgresql, runner, kube):
    """The lab inventory checks the HPA for the postgresql trigger (KEDA reaches the lab's PostgreSQL):
    the fixture's run waited for KEDA's Ready and found the HPA; here with other bounds."""
    assert "KEDA scales dbos-app with keda-hpa-to-zero between 0 and 10 replicas" in \
        postgresql["result"].stdout
    result = runner.run(PLAY, extra_vars={**postgresql["extra"], "keda_scaledobject_name": "verified",
                                          "keda_min_replicas": 2, "keda_max_replicas": 7})
    assert result.ok, result.explain()
    assert "KEDA scales dbos-app with keda-hpa-verified between 2 and 7 replicas" in \
        result.task("Check that the HPA scales the Deployment within the bounds")["msg"]
    hpa = client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler("keda-hpa-verified",
                                                                                postgresql["namespace"])
    assert hpa.spec.metrics[0].external.target.average_value == str(CONCURRENCY)
    assert hpa.metadata.owner_references[0].kind == "ScaledObject"  # made by KEDA, not by the role


def test_a_scaled_object_keda_refuses_fails_the_check_with_kedas_conditions(postgresql, runner):
    """KEDA refuses a ScaledObject whose target does not exist (Ready=False, ScaledObjectCheckFailed):
    the role waits keda_verify_timeout, then fails showing what KEDA said."""
    result = runner.run(PLAY, extra_vars={**postgresql["extra"], "keda_scaledobject_name": "refused",
                                          "keda_target_deployment": "no-such-deployment", "keda_verify_timeout": 10})
    assert not result.ok
    explained = result.explain()
    assert "KEDA did not report refused Ready within 10 s (keda_verify_timeout)" in explained
    assert "ScaledObjectCheckFailed" in explained and "no-such-deployment" in explained


@pytest.mark.usefixtures("addons")
def test_cluster_mode_grants_from_a_job(runner, kube, database, lab):
    """The Job reads the admin's and the reader's passwords from Secrets (no secret on its command
    line), and its container (the postgres image's psql, which the lab runs) creates the read-only
    role; after a password change it runs again, and the role logs in with the new one."""
    role, password = f"reader_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18) + "'\"; $x"
    database["roles"].append(role)
    namespace = f"keda-job-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
    pg = lab.postgres
    admin_secret(kube, namespace, f"postgresql://{pg['user']}:{pg['password']}@{pg['front']['host']}:5432/"
                                  f"{database['name']}?sslmode=require")
    extra = {**handed_on(lab), "dbos_namespace": namespace, "dbos_worker_concurrency": 2, "keda_trigger": "postgresql",
             # the lab's PostgreSQL as RDS serves it (TLS, port 5432 of its own address), for the Job
             "keda_db_host": pg["front"]["host"], "keda_db_name": database["name"], "keda_admin_user": pg["user"],
             "keda_reader_role": role, "dbos_db_queue_reader_password": password,
             # (with the metrics-api Deployment of keda_ns absent here; tests/site checks KEDA's side)
             **NOT_VERIFIED}
    result = runner.run(PLAY, extra_vars=extra)
    assert result.ok, result.explain()
    job = client.BatchV1Api(kube).read_namespaced_job("dbos-queue-reader-grants", namespace)
    assert strict_refusals(kube, result.applied) == {}  # (the Job itself is created strict by job_run)
    [container] = job.spec.template.spec.containers
    refs = {e.name: (e.value_from.secret_key_ref.name, e.value_from.secret_key_ref.key) for e in container.env
            if e.value_from}
    assert refs == {"PGPASSWORD": ("postgres-admin", "password"),
                    "READER_PASSWORD": ("dbos-queue-reader", "password")}
    assert password not in " ".join(container.command + container.args)
    assert any(c.type == "Complete" for c in job.status.conditions)

    def can_read(secret: str) -> bool:
        with psycopg.connect(reader_url(lab, role, secret, database), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM dbos.workflow_status").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM dbos.workflow_status")
        return True

    assert can_read(password)
    again = runner.run(PLAY, extra_vars=extra)
    assert again.ok and again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]
    # a new password: the Job runs again (its SQL is re-runnable) and sets it
    changed = runner.run(PLAY, extra_vars={**extra, "dbos_db_queue_reader_password": password + "2"})
    assert changed.ok, changed.explain()
    assert can_read(password + "2")


@pytest.mark.usefixtures("addons")
def test_a_grants_job_that_fails_fails_the_role_when_it_fails_with_psqls_log(runner, kube, database, lab):
    """A wrong admin password in the Secret: each attempt's psql cannot log in, the Job controller fails
    the Job after its back-off limit, and the role fails then (not at keda_reader_job_timeout), with
    the Job's reason and psql's own error; the password is in neither."""
    namespace = f"keda-job-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": namespace}})
    pg = lab.postgres
    admin_secret(kube, namespace, f"postgresql://{pg['user']}:not-the-admin-password@{pg['front']['host']}:5432/"
                                  f"{database['name']}?sslmode=require")
    role = f"reader_{uuid.uuid4().hex[:8]}"
    extra = {**handed_on(lab), "dbos_namespace": namespace, "dbos_worker_concurrency": 2, "keda_trigger": "postgresql",
             "keda_db_host": pg["front"]["host"], "keda_db_name": database["name"], "keda_admin_user": pg["user"],
             "keda_reader_role": role, "dbos_db_queue_reader_password": secrets.token_urlsafe(18),
             "keda_reader_job_timeout": 600, **NOT_VERIFIED}
    failed = runner.run(PLAY, extra_vars=extra)
    assert not failed.ok
    [(name, result)] = [(n, r) for n, r in failed.tasks() if r.get("failed")]
    assert name.endswith("Grant from a Job in the cluster, in place of the previous one"), name
    msg = result["msg"]
    assert f"Job {namespace}/dbos-queue-reader-grants failed (BackoffLimitExceeded" in msg, msg
    assert f'password authentication failed for user "{pg["user"]}"' in msg, msg
    assert "not-the-admin-password" not in failed.stdout + failed.stderr
    assert [p["phase"] for p in result["pods"]] == ["Failed"] * 3  # backoffLimit 2: three attempts
    assert result["succeeded"] is False


# --- the arithmetic, end to end ----------------------------------------------------------------------

def test_seven_queued_behind_concurrency_two_call_for_four_replicas(runner, start_app, postgresql, kube):
    """The sample app on the lab PostgreSQL runs 2 workflows at once; 9 enqueued leave 7 waiting. The
    triggers count the load, waiting and running (keda_statuses' default): 9, which asks for
    ceil(9/2) = 5; the guide's metric (keda_statuses [ENQUEUED]) sees 7 and asks for ceil(7/2) = 4.
    dbos.deploy.queue_depth (through playbooks/scale_report.yml) says the same from the app's endpoint
    and from the database; the postgresql trigger's SQL, run as the read-only role, counts the same
    rows as the module."""
    database = postgresql["database"]
    app = start_app(database["url"], env={"WORKER_CONCURRENCY": "2"})
    app.wait_ready()
    for _ in range(9):
        app.enqueue(120)
    wait_for(lambda: app.get("/metrics/taskQueue")[1]["queue_length"] == 7, 30, "7 waiting, 2 running")

    common = {"dbos_namespace": postgresql["namespace"], "dbos_worker_concurrency": 2}
    by_url = runner.run(SCALE_REPORT, extra_vars={**common, "scale_report_url": f"{app.base}/metrics"})
    assert by_url.ok, by_url.explain()
    assert by_url.task("Report each queue")["results"][0]["msg"] == "taskQueue: queue_length=9 desired_replicas=5"
    assert re.match(r"dbos-app: replicas=\S+ desired_replicas=5 ", by_url.task("Report the replicas")["msg"])

    db = {"scale_report_source": "database", "scale_report_db_name": database["name"],
          "scale_report_db_user": database["role"], "dbos_db_app_role_password": database["password"],
          **queue_db_tunnel(postgresql["lab"], "scale_report_db")}
    by_db = runner.run(SCALE_REPORT, extra_vars={**common, **db})
    assert by_db.ok, by_db.explain()
    assert by_db.task("Report each queue")["results"][0]["msg"] == "taskQueue: queue_length=9 desired_replicas=5"
    assert database["password"] not in by_db.stdout
    with psycopg.connect(postgresql["reader_url"], autocommit=True) as conn:
        assert conn.execute(trigger_query(kube, postgresql)).fetchone() == (9,)

    # the guide's metric, the waiting only, from either source
    for source in ({"scale_report_url": f"{app.base}/metrics"}, db):
        waiting = runner.run(SCALE_REPORT, extra_vars={**common, **source, "keda_statuses": ["ENQUEUED"]})
        assert waiting.ok, waiting.explain()
        assert waiting.task("Report each queue")["results"][0]["msg"] == "taskQueue: queue_length=7 desired_replicas=4"


def test_triggers_count_up_to_the_bound_and_ask_for_what_a_full_count_asks_for(runner, start_app, postgresql, kube):
    """keda_max_replicas 2 x concurrency 2: both triggers stop counting at 4. With 9 real workflows in
    flight (7 waiting), the URL and the query read back from the applied ScaledObjects, asked as KEDA
    asks them (the URL's path and query against the app here; the query as the read-only role), give
    4, which asks for the 2 replicas the full counts (7 and 9) ask for."""
    database = postgresql["database"]
    common = {"dbos_namespace": postgresql["namespace"], "dbos_worker_concurrency": 2, "keda_max_replicas": 2}
    by_url = runner.run(PLAY, extra_vars={**common, **NOT_VERIFIED, "keda_scaledobject_name": "bounded-api"})
    assert by_url.ok, by_url.explain()
    by_query = runner.run(PLAY, extra_vars={**postgresql["extra"], **common, "keda_scaledobject_name": "bounded-pg"})
    assert by_query.ok, by_query.explain()
    [url_trigger] = scaled_object(kube, postgresql["namespace"], "bounded-api")["spec"]["triggers"]
    [query_trigger] = scaled_object(kube, postgresql["namespace"], "bounded-pg")["spec"]["triggers"]
    url = urllib.parse.urlsplit(url_trigger["metadata"]["url"])
    assert url.query == "statuses=ENQUEUED,PENDING&max=4"
    assert query_trigger["metadata"]["query"].endswith("LIMIT 4) AS bounded")

    with psycopg.connect(database["admin_url"], autocommit=True) as conn:  # the workflows of earlier tests
        conn.execute("TRUNCATE dbos.workflow_status CASCADE")
    app = start_app(database["url"], env={"WORKER_CONCURRENCY": "2"})
    app.wait_ready()
    for _ in range(9):
        app.enqueue(120)
    wait_for(lambda: app.get("/metrics/taskQueue")[1]["queue_length"] == 7, 30, "7 waiting, 2 running")

    assert app.get(f"{url.path}?{url.query}") == (200, {"queue_length": 4, "queue_length_exact": False})
    with psycopg.connect(postgresql["reader_url"], autocommit=True) as conn:
        assert conn.execute(query_trigger["metadata"]["query"]).fetchone() == (4,)
        assert conn.execute(trigger_query(kube, postgresql)).fetchone() == (9,)  # bound 30: the full count

    # dbos.deploy.queue_depth, through the report, from the app and from the database: ceil(7/2) and
    # ceil(9/2) are both above the 2 replicas at most, which the bounded counts ask for
    report = runner.run(SCALE_REPORT, extra_vars={**common, "scale_report_url": f"{app.base}/metrics"})
    assert report.ok, report.explain()
    assert report.task("Report each queue")["results"][0]["msg"] == "taskQueue: queue_length>=4 desired_replicas=2"
    db = {"scale_report_source": "database", "scale_report_db_name": database["name"], "keda_trigger": "postgresql",
          "scale_report_db_user": database["role"], "dbos_db_app_role_password": database["password"],
          **queue_db_tunnel(postgresql["lab"], "scale_report_db")}
    report = runner.run(SCALE_REPORT, extra_vars={**common, **db})
    assert report.ok, report.explain()
    assert report.task("Report each queue")["results"][0]["msg"] == "taskQueue: queue_length>=4 desired_replicas=2"


def test_both_triggers_count_the_statuses_and_the_version_they_are_given(runner, start_app, postgresql, kube):
    """keda_statuses and keda_application_version reach both triggers. With 9 workflows of the app's
    version in flight (2 running, 7 waiting) and 3 of a version no app runs (ENQUEUED), the URL and the
    query read back from the applied ScaledObjects, asked as KEDA asks them, count that version's
    waiting workflows only, 3; so does the scale report, from the app's endpoint and from the database."""
    database = postgresql["database"]
    with psycopg.connect(database["admin_url"], autocommit=True) as conn:  # the workflows of earlier tests
        conn.execute("TRUNCATE dbos.workflow_status CASCADE")
    app = start_app(database["url"], env={"WORKER_CONCURRENCY": "2"})
    app.wait_ready()
    for _ in range(9):
        app.enqueue(120)
    dbos = DBOSClient(system_database_url=database["admin_url"], application_name=APP_NAME)
    try:
        for _ in range(3):
            dbos.enqueue({"queue_name": QUEUE_NAME, "workflow_name": "sleep_workflow", "app_version": UNSERVED}, 120)
    finally:
        dbos.destroy()
    wait_for(lambda: app.get("/metrics/taskQueue")[1]["queue_length"] == 10, 30, "7 + 3 waiting, 2 running")

    common = {"dbos_namespace": postgresql["namespace"], "dbos_worker_concurrency": 2, "keda_statuses": ["ENQUEUED"],
              "keda_scale_per_version": False, "keda_application_version": UNSERVED}
    by_url = runner.run(PLAY, extra_vars={**common, **NOT_VERIFIED, "keda_scaledobject_name": "one-version-api"})
    assert by_url.ok, by_url.explain()
    by_query = runner.run(PLAY, extra_vars={**postgresql["extra"], **common,
                                            "keda_scaledobject_name": "one-version-pg"})
    assert by_query.ok, by_query.explain()
    [url_trigger] = scaled_object(kube, postgresql["namespace"], "one-version-api")["spec"]["triggers"]
    [query_trigger] = scaled_object(kube, postgresql["namespace"], "one-version-pg")["spec"]["triggers"]
    url = urllib.parse.urlsplit(url_trigger["metadata"]["url"])
    assert url.query == f"version={urllib.parse.quote(UNSERVED, safe='')}&statuses=ENQUEUED&max=20"
    assert app.get(f"{url.path}?{url.query}") == (200, {"queue_length": 3, "queue_length_exact": True})
    assert "status IN ('ENQUEUED')" in query_trigger["metadata"]["query"]
    assert "application_version = 'v2 ''unserved''/rc'" in query_trigger["metadata"]["query"]
    with psycopg.connect(postgresql["reader_url"], autocommit=True) as conn:
        assert conn.execute(query_trigger["metadata"]["query"]).fetchone() == (3,)

    db = {"scale_report_source": "database", "scale_report_db_name": database["name"],
          "scale_report_db_user": database["role"], "dbos_db_app_role_password": database["password"],
          **queue_db_tunnel(postgresql["lab"], "scale_report_db")}
    for source in ({"scale_report_url": f"{app.base}/metrics"}, db):
        report = runner.run(SCALE_REPORT, extra_vars={**common, **source})
        assert report.ok, report.explain()
        assert report.task("Report each queue")["results"][0]["msg"] == "taskQueue: queue_length=3 desired_replicas=2"
