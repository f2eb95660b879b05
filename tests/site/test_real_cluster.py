"""playbooks/site.yml on a lab whose Kubernetes is the real control plane (``Lab.up(kube="real")``):
the real API server (RBAC, admission, strict field validation by kubernetes.core's server-side
apply), the real Sealed Secrets controller unsealing the roles' SealedSecrets, real controllers
rolling out the Deployment and finalizing the namespace at teardown. While the site converges, every
TCP connection of every lab process is sampled: none may have a peer outside 127.0.0.0/8."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import threading
import time

import psutil
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab

SITE = REPO / "playbooks" / "site.yml"
TEARDOWN = REPO / "playbooks" / "teardown.yml"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


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
    lab = Lab.up(workdir / "lab", kube="real")
    sampler = ConnectionSampler(lab)
    sampler.start()
    try:
        runner = AnsibleRunner(lab, workdir)
        first = runner.run(SITE)
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
    assert {"kube-apiserver", "kube-controller-manager", "controller"} <= sampler.seen, sampler.seen
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
    assert lab.kube["kind"] == "real"


def test_a_second_run_and_check_mode_change_nothing(converged):
    _, runner, first, _ = converged
    assert first.ok, first.explain()
    for check in (False, True):
        again = runner.run(SITE, check=check)
        assert again.ok, again.explain()
        assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_teardown_deletes_the_namespace_for_real(converged):
    lab, runner, first, _ = converged
    assert first.ok, first.explain()
    done = runner.run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
    assert done.ok, done.explain()
    core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    with pytest.raises(ApiException) as gone:
        core.read_namespace("dbos")
    assert gone.value.status == 404
