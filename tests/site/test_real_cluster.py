"""playbooks/site.yml on the lab's real control plane, with the postgresql trigger: the real API
server (RBAC, admission, strict field validation by kubernetes.core's server-side apply), the real
Sealed Secrets controller unsealing the roles' SealedSecrets, the real KEDA operator and metrics
adapter (through the aggregation layer) reading the queue from the lab's PostgreSQL as the read-only
role, real controllers rolling out the Deployment and finalizing the namespace at teardown. While
the site converges, every TCP connection of every lab process is sampled: none may have a peer
outside 127.0.0.0/8."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import psutil
import psycopg
import pytest
from dbos import DBOSClient
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab
from tests.sample_app.harness import wait_for

SITE = REPO / "playbooks" / "site.yml"
TEARDOWN = REPO / "playbooks" / "teardown.yml"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# the trigger KEDA can reach here: the lab's PostgreSQL (the metrics-api trigger's app pods do not run)
POSTGRESQL = {"keda_trigger": "postgresql"}
SCALED_OBJECT = "dbos-app-scaledobject"


class ConnectionSampler(threading.Thread):
    """Samples, every 0.2 s, the TCP connections of the lab's processes and all their children (the
    controllers the runner runs among them), and of this test's children (ansible-playbook and the
    module processes it starts)."""

    def __init__(self, lab: Lab):
        super().__init__(daemon=True)
        self.pids = [p.pid for p in lab.processes] + [os.getpid()]
        self.samples = 0
        self.seen: set[str] = set()  # processes seen with a connection: the sampler does see them
        self.foreign: set[tuple[str, str]] = set()
        self.done = threading.Event()

    def processes(self) -> list[psutil.Process]:
        found = []
        for pid in self.pids:
            try:
                top = psutil.Process(pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def run(self) -> None:
        while not self.done.is_set():
            for proc in self.processes():
                try:
                    for conn in proc.net_connections(kind="tcp"):
                        if conn.raddr:
                            self.seen.add(proc.name())
                        if conn.raddr and not _loopback(conn.raddr.ip):
                            self.foreign.add((proc.name(), f"{conn.raddr.ip}:{conn.raddr.port}"))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.samples += 1
            time.sleep(0.2)


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address in LOOPBACK or address == ipaddress.ip_address("::1")


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("real-site")
    lab = Lab.up(workdir / "lab")
    sampler = ConnectionSampler(lab)
    sampler.start()
    try:
        runner = AnsibleRunner(lab, workdir)
        first = runner.run(SITE, extra_vars=POSTGRESQL)
        sampler.done.set()
        sampler.join()
        yield lab, runner, first, sampler
    finally:
        sampler.done.set()
        lab.down()


def test_the_site_converges_with_no_packet_off_loopback(converged):
    _, _, first, sampler = converged
    assert first.ok, first.explain()
    assert first.changed > 0
    assert sampler.samples > 20
    # processes with long-lived connections, seen in every sample run (PostgreSQL's are too brief to count on)
    assert {"kube-apiserver", "kube-controller-manager", "controller", "keda", "keda-adapter"} <= sampler.seen, \
        sampler.seen
    assert sampler.foreign == set()


@pytest.mark.parametrize(("ip", "local"), [("127.0.0.1", True), ("127.1.0.5", True), ("::1", True),
                                           ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("192.0.2.1", False),
                                           ("::ffff:10.96.0.1", False), ("fd00::1", False)])
def test_what_counts_as_loopback(ip, local):
    assert _loopback(ip) is local


def test_the_real_controller_unsealed_the_secrets(converged):
    lab, _, first, _ = converged
    assert first.ok, first.explain()
    core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    admin = core.read_namespaced_secret("postgres-admin", "dbos")
    assert admin.metadata.owner_references[0].kind == "SealedSecret"
    password = hashlib.sha256(base64.b64decode(admin.data["password"])).hexdigest()  # compared by hash
    assert password == hashlib.sha256(lab.postgres["password"].encode()).hexdigest()
    # the controller that did it is the real one, run for its pod by the lab's runner
    controllers = json.loads(Path(lab.kube["runner_state"]).read_text())
    controller = controllers["kube-system/sealed-secrets"]
    assert controller["ready"] and controller["pod"].startswith("kube-system/sealed-secrets-")


def test_a_second_run_and_check_mode_change_nothing(converged):
    _, runner, first, _ = converged
    assert first.ok, first.explain()
    for check in (False, True):
        again = runner.run(SITE, check=check, extra_vars=POSTGRESQL)
        assert again.ok, again.explain()
        assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def external_metric(lab: Lab) -> tuple[str, list[dict]]:
    """The HPA's metric name, and what the API server answers for it: the aggregation layer's route to
    KEDA's metrics adapter, as ``kubectl get --raw`` asks it and as the HPA controller does."""
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{SCALED_OBJECT}", "dbos")
    name = hpa.spec.metrics[0].external.metric.name
    selector = urllib.parse.quote(f"scaledobject.keda.sh/name={SCALED_OBJECT}")
    raw = subprocess.run([lab.state["tools"]["kubectl"], "get", "--raw",
                          f"/apis/external.metrics.k8s.io/v1beta1/namespaces/dbos/{name}?labelSelector={selector}"],
                         env={**os.environ, **lab.env()}, capture_output=True, text=True, timeout=30, check=False)
    assert raw.returncode == 0, raw.stderr
    return name, json.loads(raw.stdout)["items"]


def test_keda_accepts_the_scaled_object_and_counts_the_queue_as_the_reader(converged):
    """KEDA reports the ScaledObject Ready and made its HPA (the role checked both: keda_verify_hpa is
    true on the lab for this trigger); the metric KEDA serves through the aggregation layer is the
    bounded count of the workflows enqueued in the lab's PostgreSQL, from a connection of the
    read-only role."""
    lab, _, first, _ = converged
    assert first.ok, first.explain()
    assert first.task("Check that the HPA scales the Deployment within the bounds")["msg"].startswith(
        "KEDA scales dbos-app with keda-hpa-dbos-app-scaledobject between 1 and 10 replicas")
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    scaled = client.CustomObjectsApi(api).get_namespaced_custom_object("keda.sh", "v1alpha1", "dbos", "scaledobjects",
                                                                       SCALED_OBJECT)
    assert {"type": "Ready", "status": "True"}.items() <= next(
        c for c in scaled["status"]["conditions"] if c["type"] == "Ready").items()
    name, items = external_metric(lab)
    assert name == "s0-postgresql" and [i["value"] for i in items] == ["0"]
    # KEDA connects as on AWS: to the RDS endpoint's name, with TLS (the lab resolves the name to its
    # PostgreSQL front for the processes it runs)
    secret = client.CoreV1Api(api).read_namespaced_secret("dbos-queue-reader", "dbos")
    url = urllib.parse.urlsplit(base64.b64decode(secret.data["database-url"]).decode())
    assert url.hostname.endswith(".rds.amazonaws.com") and url.port == 5432, url.hostname
    assert urllib.parse.parse_qs(url.query) == {"sslmode": ["require"]}

    admin = lab.postgres["admin_url"].rsplit("/", 1)[0] + "/dbos_app"
    dbos = DBOSClient(system_database_url=admin, application_name="dbos-app")
    try:
        for _ in range(7):
            dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow"}, 3600)
    finally:
        dbos.destroy()
    # KEDA asks the database on each request (no cache by default): 7 waiting, under the bound of 20
    wait_for(lambda: external_metric(lab)[1][0]["value"] == "7", 30, "KEDA's metric to count 7 workflows")
    with psycopg.connect(admin, autocommit=True) as conn:
        users = {row[0] for row in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = 'dbos_app' AND pid <> pg_backend_pid()")}
    assert "dbos_queue_reader" in users, users


def test_teardown_deletes_the_namespace_for_real(converged):
    lab, runner, first, _ = converged
    assert first.ok, first.explain()
    done = runner.run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
    assert done.ok, done.explain()
    core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    with pytest.raises(ApiException) as gone:
        core.read_namespace("dbos")
    assert gone.value.status == 404
