"""The guide's autoscaling test, compressed, on the lab with the real KEDA operator and metrics adapter,
the real HPA controller, the app's pods running and the reconciler beside them: playbooks/site.yml with
the lab's timings (lab/autoscale.yml), then playbooks/load_test.yml; and the same load through pod loss,
a deletion that outlasts the grace period and a version change.

What must hold at the end, whatever happened to the pods: every workflow SUCCESS, each step of each
run once (the durable steps DBOS records: no completed step ran again), nothing PENDING or ENQUEUED."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time

import psycopg
import pytest
import yaml
from dbos import DBOSClient
from dbos_sample_app.settings import APP_NAME
from kubernetes import client, config

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab
from lab.demo import port_forward
from tests.sample_app.harness import wait_for

SITE = REPO / "playbooks" / "site.yml"
LOAD_TEST = REPO / "playbooks" / "load_test.yml"
RETIRE = REPO / "playbooks" / "retire.yml"
TIMINGS = yaml.safe_load((REPO / "lab" / "autoscale.yml").read_text())
EXPECTED_STEPS = ["record_start", "DBOS.sleep", "record_finish"]
WORKFLOWS, SECONDS = 10, 20  # on concurrency 2: ceil(10 / 2) = 5 replicas
RECOVERY_LIMIT = 30
NAMESPACE = "dbos"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("autoscale")
    lab = Lab.up(workdir / "lab")
    try:
        runner = AnsibleRunner(lab, workdir)
        result = runner.run(SITE, extra_vars=TIMINGS)
        assert result.ok, result.explain()
        yield lab, runner, config.new_client_from_config(lab.kube["kubeconfig"])
    finally:
        lab.down()


def system_db(lab: Lab) -> str:
    return lab.postgres["admin_url"].rsplit("/", 1)[0] + "/dbos_app"


def rows(lab: Lab, ids) -> dict[str, tuple[str, str, str]]:
    """workflow id -> (status, executor id, application version)."""
    with psycopg.connect(system_db(lab), autocommit=True) as conn:
        return {w: (s, e, v) for w, s, e, v in conn.execute(
            "SELECT workflow_uuid, status, executor_id, application_version FROM dbos.workflow_status "
            "WHERE workflow_uuid = ANY(%s)", (list(ids),))}


def steps(lab: Lab, ids) -> dict[str, list[str]]:
    with psycopg.connect(system_db(lab), autocommit=True) as conn:
        found = {w: [] for w in ids}
        for w, name in conn.execute("SELECT workflow_uuid, function_name FROM dbos.operation_outputs "
                                    "WHERE workflow_uuid = ANY(%s) ORDER BY workflow_uuid, function_id", (list(ids),)):
            found[w].append(name)
        return found


def in_flight(lab: Lab) -> dict[str, int]:
    with psycopg.connect(system_db(lab), autocommit=True) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM dbos.workflow_status "
                                 "WHERE status IN ('PENDING', 'ENQUEUED') GROUP BY status").fetchall())


def deployments(api) -> dict[str, client.V1Deployment]:
    return {d.metadata.name: d for d in client.AppsV1Api(api).list_namespaced_deployment(
        NAMESPACE, label_selector="app.kubernetes.io/name=dbos-app").items}


def settled(api, replicas: int = 1) -> bool:
    deps = deployments(api)
    return sum(d.spec.replicas or 0 for d in deps.values()) == replicas == sum(
        d.status.ready_replicas or 0 for d in deps.values())


def app_pods(api) -> list[client.V1Pod]:
    return [p for p in client.CoreV1Api(api).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name=dbos-app").items if not p.metadata.deletion_timestamp]


def assert_every_workflow_ran_once_and_nothing_is_left(lab: Lab, ids) -> None:
    final = rows(lab, ids)
    assert {w: s for w, (s, _, _) in final.items()} == dict.fromkeys(ids, "SUCCESS")
    assert steps(lab, ids) == {w: EXPECTED_STEPS for w in ids}
    assert in_flight(lab) == {}


def test_the_guides_test_rises_to_five_replicas_and_falls_back_after_the_drain(site, tmp_path, capsys):
    lab, runner, api = site
    wait_for(lambda: settled(api), 120, "the app to settle at 1 replica")
    forward, port = port_forward(lab)
    report_file = tmp_path / "report.json"
    try:
        result = runner.run(LOAD_TEST, extra_vars={**TIMINGS, "load_test_url": f"http://127.0.0.1:{port}",
                                                   "load_test_workflows": WORKFLOWS, "load_test_seconds": SECONDS,
                                                   "load_test_interval": 1, "load_test_timeout": 300,
                                                   "load_test_report_file": str(report_file)})
    finally:
        forward.terminate()
    assert result.ok, result.explain()
    report = json.loads(report_file.read_text())
    with capsys.disabled():
        print("\n" + "\n".join(report["table"] + report["chart"]))
    assert (report["peak_queue_length"], report["peak_desired"], report["peak_ready"]) == (WORKFLOWS, 5, 5)
    assert report["settled"] and report["timeline"][-1]["desired"] == 1
    assert_every_workflow_ran_once_and_nothing_is_left(lab, report["workflow_ids"])


class Watcher(threading.Thread):
    """Every 0.2 s: when each app pod was last seen (so when it disappeared), and on which executor
    each workflow was first seen running (PENDING) or done."""

    def __init__(self, lab: Lab, api, ids):
        super().__init__(daemon=True)
        self.lab, self.api, self.ids = lab, api, ids
        self.last_seen: dict[str, float] = {}
        self.running_on: dict[str, dict[str, float]] = {w: {} for w in ids}  # workflow -> executor -> first seen
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            now = time.monotonic()
            for pod in client.CoreV1Api(self.api).list_namespaced_pod(NAMESPACE).items:
                self.last_seen[pod.metadata.name] = now
            for w, (status, executor, _) in rows(self.lab, self.ids).items():
                if status == "PENDING" or (status == "SUCCESS" and executor not in self.running_on[w]):
                    self.running_on[w].setdefault(executor, now)
            time.sleep(0.2)

    def recoveries(self) -> list[tuple[str, str, float]]:
        """(workflow, dead executor, seconds from its pod's disappearance to the workflow running again)."""
        found = []
        there = {p.metadata.name for p in client.CoreV1Api(self.api).list_namespaced_pod(NAMESPACE).items}
        gone = set(self.last_seen) - there
        for w, seen in self.running_on.items():
            ordered = sorted(seen.items(), key=lambda item: item[1])
            for (before, _), (_, at) in itertools.pairwise(ordered):
                if before in gone:
                    found.append((w, before, at - self.last_seen[before]))
        return found


def enqueue(lab: Lab, count: int, seconds: float, version: str) -> list[str]:
    # (as the app's own: the app's /metrics counts its application's workflows)
    dbos = DBOSClient(system_database_url=system_db(lab), application_name=APP_NAME)
    try:
        return [dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": version},
                             seconds).workflow_id for _ in range(count)]
    finally:
        dbos.destroy()


def busy_pod(lab: Lab, api, ids, exclude=()) -> client.V1Pod:
    def find():
        running = {e for s, e, _ in rows(lab, ids).values() if s == "PENDING"}
        pods = [p for p in app_pods(api) if p.metadata.name in running and p.metadata.name not in exclude]
        return pods[0] if pods else None
    return wait_for(find, 90, "a pod running some of the workflows", interval=0.5)


def test_no_workflow_is_stranded_through_a_dead_pod_a_long_deletion_and_a_version_change(site, capsys):
    lab, runner, api = site
    wait_for(lambda: settled(api), 120, "the app to settle at 1 replica")
    version = deployments(api)["dbos-app"].metadata.labels["dbos.dev/app-version"]
    ids = enqueue(lab, WORKFLOWS, SECONDS, version)
    watcher = Watcher(lab, api, ids)
    watcher.start()
    # a new version mid-load, from the start (the app role counts the old version's work early in its
    # run): the old one is kept for its work, and scales on it. (Its retirement is playbooks/retire.yml's,
    # below, once KEDA has scaled it to zero: the run's own, at its end, would find 20 s workflows done.)
    upgrading: dict = {}
    upgrade = threading.Thread(target=lambda: upgrading.setdefault("result", runner.run(
        SITE, extra_vars={**TIMINGS, "app_version": f"{version}-next", "app_retire_drained_versions": False},
        tags="app,keda")), daemon=True)
    upgrade.start()
    try:
        wait_for(lambda: len(app_pods(api)) >= 3, 90, "KEDA's HPA to add pods")
        # a node dies: the pod's process is killed, then its object removed
        dead = busy_pod(lab, api, ids)
        os.kill(int(dead.status.container_statuses[0].container_id.removeprefix("lab://")), signal.SIGKILL)
        client.CoreV1Api(api).delete_namespaced_pod(dead.metadata.name, NAMESPACE, grace_period_seconds=0)
        # a pod deleted while its workflows outlast its grace (3 s of the app's, 6 s of the kubelet's)
        drained = busy_pod(lab, api, ids, exclude={dead.metadata.name})
        client.CoreV1Api(api).delete_namespaced_pod(drained.metadata.name, NAMESPACE)
        upgrade.join(600)
        assert upgrading["result"].ok, upgrading["result"].explain()
        assert f"dbos-app-{version}" in deployments(api)
        wait_for(lambda: all(s == "SUCCESS" for s, _, _ in rows(lab, ids).values()), 240, "every workflow to finish",
                 interval=1)
    finally:
        watcher.done.set()
        watcher.join()
        upgrade.join(600)
    recovered = watcher.recoveries()
    with capsys.disabled():
        for w, executor, seconds in sorted(recovered, key=lambda r: r[2]):
            print(f"\nrecovery: {w} of {executor} running again {seconds:.1f} s after its pod was gone")
    lost = {executor for _, executor, _ in recovered}
    assert {dead.metadata.name, drained.metadata.name} <= lost, recovered
    assert max(seconds for _, _, seconds in recovered) <= RECOVERY_LIMIT
    assert_every_workflow_ran_once_and_nothing_is_left(lab, ids)

    # the old version, drained, goes to zero, and is retired with its ScaledObject
    old = f"dbos-app-{version}"
    wait_for(lambda: (deployments(api)[old].spec.replicas or 0) == 0, 120, f"{old} to scale to zero", interval=1)
    retired = runner.run(RETIRE, extra_vars=TIMINGS)
    assert retired.ok, retired.explain()
    assert old not in deployments(api)

    def collected():
        names = [o["metadata"]["name"] for o in client.CustomObjectsApi(api).list_namespaced_custom_object(
            "keda.sh", "v1alpha1", NAMESPACE, "scaledobjects")["items"]]
        return names == ["dbos-app-scaledobject"]

    wait_for(collected, 60, "the retired version's ScaledObject to be collected with its Deployment")
