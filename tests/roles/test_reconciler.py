"""The reconciler the app role deploys beside the application, on the lab's real control plane: its
pods and the app's run as processes (lab.kube.runner), RBAC is the API server's, the workflows are
real ones in the lab's PostgreSQL.

Each test takes pods away as production loses them and checks what became of their work."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest
from dbos import DBOSClient
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.roles.conftest import handed_on
from tests.sample_app.harness import SystemDatabase, read_or_none, wait_for

PLAY = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.app"]}]
EXPECTED_STEPS = ["record_start", "DBOS.sleep", "record_finish"]
INTERVAL = 1  # the reconciler's, for the lab
LEASE = 4
RECONCILER_PODS = "app.kubernetes.io/name=dbos-app-reconciler"
RECOVERY_LIMIT = 30  # seconds from a pod's disappearance to its workflows running again


@pytest.fixture(scope="module")
def app_vars(kube, migrated_database, lab):
    core = client.CoreV1Api(kube)
    namespace = f"rec-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "dbos-app-db"}, "stringData": {
        "database-url": migrated_database["url"], "password": migrated_database["password"]}})
    return {**handed_on(lab), "app_replicas_from_autoscaler": False, "dbos_namespace": namespace,
            "app_version": "r1", "app_replicas": 2, "dbos_worker_concurrency": 2,
            "app_shutdown_grace_seconds": 2, "app_termination_grace_seconds": 5,
            "app_reconciler_interval_seconds": INTERVAL, "app_reconciler_lease_seconds": LEASE,
            "app_queue_count_from": "controller", "app_queue_db_name": migrated_database["name"],
            "app_queue_db_user": migrated_database["role"], "dbos_db_app_role_password": migrated_database["password"],
            "app_queue_db_host": lab.postgres["host"], "app_queue_db_port": lab.postgres["port"],
            "app_queue_db_ssl_mode": "disable"}


@pytest.fixture(scope="module")
def deployed(runner, app_vars):
    result = runner.run(PLAY, extra_vars=app_vars)
    assert result.ok, result.explain()
    return result


@pytest.fixture(scope="module")
def db(migrated_database):
    return SystemDatabase(migrated_database["url"], "postgres", admin_url=migrated_database["admin_url"])


def enqueue(migrated_database, count: int, seconds: float, version: str = "r1") -> list[str]:
    dbos = DBOSClient(system_database_url=migrated_database["admin_url"])
    try:
        return [dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": version},
                             seconds).workflow_id for _ in range(count)]
    finally:
        dbos.destroy()


def owners(db, ids) -> dict[str, tuple[str, str]]:
    """workflow id -> (status, executor id)."""
    rows = db.query("SELECT workflow_uuid, status, executor_id FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s)",
                    (list(ids),))
    return {wid: (status, executor) for wid, status, executor in rows}


def app_pods(kube, namespace: str) -> list[client.V1Pod]:
    return client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="dbos.dev/deployment=dbos-app").items


def running_on(db, ids, pod_names) -> dict[str, list[str]]:
    """pod name -> the workflows of ``ids`` it runs (PENDING, in their sleep)."""
    found: dict[str, list[str]] = {}
    for wid, (status, executor) in owners(db, ids).items():
        if status == "PENDING" and executor in pod_names and "DBOS.sleep" in db.steps(wid):
            found.setdefault(executor, []).append(wid)
    return found


def pid_of(pod: client.V1Pod) -> int:
    """The process the lab runs as the pod's container (its container id is lab://<pid>)."""
    return int(pod.status.container_statuses[0].container_id.removeprefix("lab://"))


def reconciler_pod(kube, namespace: str) -> client.V1Pod:
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=RECONCILER_PODS).items
    pods = [p for p in pods if not p.metadata.deletion_timestamp]
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def recoveries(kube, namespace: str) -> list[dict]:
    """The ``recovered`` lines of every reconciler pod's log still there."""
    core, lines = client.CoreV1Api(kube), []
    for pod in core.list_namespaced_pod(namespace, label_selector=RECONCILER_PODS).items:
        try:
            text = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        except ApiException:
            continue
        for line in text.splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "recovered":
                lines.append(json.loads(line))
    return lines


def gone(kube, namespace: str, name: str) -> bool:
    return read_or_none(client.CoreV1Api(kube).read_namespaced_pod, name, namespace) is None


def node_dies(kube, pod: client.V1Pod) -> float:
    """The pod's process is killed (SIGKILL), and its object force-deleted, as the node lifecycle
    controller does once a node is lost. Returns when the object was gone (monotonic)."""
    os.kill(pid_of(pod), signal.SIGKILL)
    client.CoreV1Api(kube).delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
    wait_for(lambda: gone(kube, pod.metadata.namespace, pod.metadata.name), 30, f"{pod.metadata.name} to be gone")
    return time.monotonic()


def wait_running_again(db, ids, dead: str, since: float) -> float:
    """Seconds from ``since`` until every workflow of ``ids`` runs again (PENDING on another executor)
    or is done."""
    def again():
        now = owners(db, ids)
        return all(s == "SUCCESS" or (s == "PENDING" and e != dead) for s, e in now.values())
    wait_for(again, 60, f"the workflows of {dead} to run again", interval=0.2)
    return time.monotonic() - since


def wait_done(db, ids, timeout: float = 90) -> None:
    wait_for(lambda: all(s == "SUCCESS" for s, _ in owners(db, ids).values()), timeout, "every workflow to finish")
    # exactly once: each workflow ran each of its steps once, the interrupted ones included
    assert {wid: db.steps(wid) for wid in ids} == {wid: EXPECTED_STEPS for wid in ids}


def ready_pods(kube, namespace: str, count: int) -> list[client.V1Pod]:
    def ready():
        pods = [p for p in app_pods(kube, namespace) if not p.metadata.deletion_timestamp and p.status.conditions
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)]
        return pods if len(pods) == count else None
    return wait_for(ready, 90, f"{count} Ready app pods", interval=0.5)


def test_the_reconciler_runs_with_the_apps_database_role_and_holds_its_lease(deployed, kube, app_vars):
    namespace = app_vars["dbos_namespace"]
    pod = wait_for(lambda: reconciler_pod(kube, namespace), 60, "the reconciler's pod")
    lease = wait_for(lambda: (lease := client.CoordinationV1Api(kube).read_namespaced_lease(
        "dbos-app-reconciler", namespace)).spec.holder_identity and lease, 60, "the Lease to be held")
    assert lease.spec.holder_identity == pod.metadata.name
    assert lease.spec.lease_duration_seconds == LEASE
    [container] = pod.spec.containers
    url = next(e for e in container.env if e.name == "DBOS_SYSTEM_DATABASE_URL")
    # the app's restricted role, from the app's own Secret
    assert (url.value_from.secret_key_ref.name, url.value_from.secret_key_ref.key) == ("dbos-app-db", "database-url")
    assert pod.spec.service_account_name == "dbos-app-reconciler"


def test_a_second_run_changes_nothing_though_the_reconciler_writes_its_lease(deployed, runner, app_vars):
    again = runner.run(PLAY, extra_vars=app_vars)
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_its_token_lists_pods_in_its_namespace_and_reads_no_secret_nor_pods_elsewhere(deployed, kube, app_vars, lab):
    namespace = app_vars["dbos_namespace"]
    token = client.CoreV1Api(kube).create_namespaced_service_account_token(
        "dbos-app-reconciler", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    configuration = client.Configuration()
    configuration.host, configuration.ssl_ca_cert = kube.configuration.host, kube.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    as_reconciler = client.ApiClient(configuration)  # (its connection pool is made here, from the configuration)
    core, leases = client.CoreV1Api(as_reconciler), client.CoordinationV1Api(as_reconciler)

    assert {p.metadata.name for p in core.list_namespaced_pod(namespace).items} >= {
        p.metadata.name for p in app_pods(kube, namespace)}
    assert leases.read_namespaced_lease("dbos-app-reconciler", namespace).metadata.name == "dbos-app-reconciler"
    refused = [
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.read_namespaced_secret("dbos-app-db", namespace),
        lambda: core.list_namespaced_pod("default"),
        core.list_pod_for_all_namespaces,
        lambda: core.delete_namespaced_pod(app_pods(kube, namespace)[0].metadata.name, namespace),
        lambda: leases.create_namespaced_lease(namespace, {"metadata": {"name": "another"}}),
        lambda: leases.read_namespaced_lease("another", namespace),
    ]
    for call in refused:
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 403, caught.value


@pytest.mark.usefixtures("deployed")
def test_a_dead_pods_work_runs_again_on_another_pod_from_its_last_step(kube, app_vars, migrated_database, db, capsys):
    namespace = app_vars["dbos_namespace"]
    pods = ready_pods(kube, namespace, 2)
    ids = enqueue(migrated_database, 4, 6)
    names = {p.metadata.name for p in pods}
    busy = wait_for(lambda: (r := running_on(db, ids, names)) and sum(map(len, r.values())) == 4 and r, 60,
                    "four workflows sleeping on the two pods")
    victim = next(p for p in pods if p.metadata.name in busy)
    lost = busy[victim.metadata.name]

    disappeared = node_dies(kube, victim)
    seconds = wait_running_again(db, lost, victim.metadata.name, disappeared)
    with capsys.disabled():
        print(f"\nrecovery: {len(lost)} workflows of {victim.metadata.name} running again "
              f"{seconds:.1f} s after its pod was gone (reconciler interval {INTERVAL} s)")
    assert seconds <= RECOVERY_LIMIT
    wait_done(db, ids)
    [line] = [r for r in recoveries(kube, namespace) if r["executor"] == victim.metadata.name]
    assert (sorted(line["workflow_ids"]), line["queue"], line["app_versions"]) == (sorted(lost), "taskQueue", ["r1"])


def test_a_terminating_pods_work_is_left_to_it(deployed, kube, app_vars, migrated_database, db):
    namespace = app_vars["dbos_namespace"]
    pods = ready_pods(kube, namespace, 2)
    names = {p.metadata.name for p in pods}
    ids = enqueue(migrated_database, 2, 8)
    busy = wait_for(lambda: (r := running_on(db, ids, names)) and sum(map(len, r.values())) == 2 and r, 60,
                    "two workflows sleeping")
    pod_name, mine = next(iter(busy.items()))
    # Terminating, still running: SIGTERM stops its dequeuing, and its process lives on until it exits
    # (its grace, 2 s, is shorter than the workflows: it exits with them PENDING)
    os.kill(pid_of(next(p for p in pods if p.metadata.name == pod_name)), signal.SIGSTOP)
    try:
        client.CoreV1Api(kube).delete_namespaced_pod(pod_name, namespace, grace_period_seconds=30)
        deadline = time.monotonic() + 6 * INTERVAL + LEASE
        while time.monotonic() < deadline:  # many passes of the reconciler while the pod is Terminating
            pod = client.CoreV1Api(kube).read_namespaced_pod(pod_name, namespace)
            assert pod.metadata.deletion_timestamp is not None
            assert {owners(db, mine)[w] for w in mine} == {("PENDING", pod_name)}
            time.sleep(0.5)
    finally:
        os.kill(pid_of(client.CoreV1Api(kube).read_namespaced_pod(pod_name, namespace)), signal.SIGCONT)
    assert not [r for r in recoveries(kube, namespace) if r["executor"] == pod_name]
    # once it is gone, what it could not finish within its grace runs again elsewhere
    wait_for(lambda: gone(kube, namespace, pod_name), 60, f"{pod_name} to be gone")
    wait_done(db, ids)


def test_the_reconcilers_replacement_takes_the_lease_and_carries_on(deployed, kube, app_vars, migrated_database, db):
    namespace = app_vars["dbos_namespace"]
    pods = ready_pods(kube, namespace, 2)
    leases = client.CoordinationV1Api(kube)
    before = leases.read_namespaced_lease("dbos-app-reconciler", namespace).spec
    old = reconciler_pod(kube, namespace)
    ids = enqueue(migrated_database, 2, 6)
    names = {p.metadata.name for p in pods}
    busy = wait_for(lambda: (r := running_on(db, ids, names)) and sum(map(len, r.values())) == 2 and r, 60,
                    "two workflows sleeping")
    victim = next(p for p in pods if p.metadata.name in busy)

    node_dies(kube, old)  # the reconciler first: it cannot release its Lease
    disappeared = node_dies(kube, victim)
    wait_running_again(db, busy[victim.metadata.name], victim.metadata.name, disappeared)
    after = leases.read_namespaced_lease("dbos-app-reconciler", namespace).spec
    new = reconciler_pod(kube, namespace)
    assert new.metadata.name != old.metadata.name
    assert (after.holder_identity, after.lease_transitions) == (new.metadata.name, (before.lease_transitions or 0) + 1)
    wait_done(db, ids)
    assert [r["executor"] for r in recoveries(kube, namespace)].count(victim.metadata.name) == 1


def test_turned_off_it_is_deleted(deployed, runner, kube, app_vars):
    result = runner.run(PLAY, extra_vars={**app_vars, "app_reconciler_enabled": False})
    assert result.ok, result.explain()
    namespace = app_vars["dbos_namespace"]
    assert read_or_none(client.AppsV1Api(kube).read_namespaced_deployment, "dbos-app-reconciler", namespace) is None
    assert read_or_none(client.RbacAuthorizationV1Api(kube).read_namespaced_role, "dbos-app-reconciler",
                        namespace) is None
    assert read_or_none(client.CoordinationV1Api(kube).read_namespaced_lease, "dbos-app-reconciler", namespace) is None
