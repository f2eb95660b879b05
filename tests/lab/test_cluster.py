"""The lab's real control plane (lab/kube/cluster.py): etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, as built by ``make lab-build``: the version it reports, RBAC and strict
field validation as on EKS, controllers that run (a Deployment's pods, namespace finalization), only
loopback sockets, and nothing left once stopped."""

from __future__ import annotations

import ipaddress
import json
import uuid

import psutil
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab import procs
from lab.components import KUBERNETES
from lab.core import tool
from lab.kube import cluster
from tests.sample_app.harness import read_or_none, wait_for


def kubectl() -> str:
    found = tool("kubectl")
    assert found, "kubectl is installed by make install (.tools/bin) or the machine image"
    return found


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cluster")
    facts, processes = cluster.start(directory, kubectl())
    yield facts, processes
    cluster.stop(processes, directory / "kwok")


@pytest.fixture(scope="module")
def api(plane):
    facts, _ = plane
    return config.new_client_from_config(facts["kubeconfig"])


def test_it_is_the_pinned_kubernetes(plane, api):
    facts, processes = plane
    assert facts["version"] == f"v{KUBERNETES}"
    assert {p.name for p in processes} == {"kube:etcd", "kube:kube-apiserver", "kube:kube-controller-manager",
                                           "kube:kube-scheduler", "kube:kwok-controller"}
    nodes = client.CoreV1Api(api).list_node().items
    assert len(nodes) == 1

    def ready() -> bool:  # kwok writes the node's conditions just after it registers it
        [node] = client.CoreV1Api(api).list_node().items
        return {c.type: c.status for c in node.status.conditions or []}.get("Ready") == "True"

    wait_for(ready, 30, "the node Ready")


def test_every_socket_is_on_loopback(plane):
    loopback = ipaddress.ip_network("127.0.0.0/8")
    _, processes = plane
    for proc in processes:
        for conn in psutil.Process(proc.pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                assert ipaddress.ip_address(conn.laddr.ip) in loopback, (proc.name, conn)
            if conn.raddr:
                assert ipaddress.ip_address(conn.raddr.ip) in loopback, (proc.name, conn)


def test_rbac_decides_what_a_service_account_may_do(api, plane):
    namespace = f"rbac-{uuid.uuid4().hex[:6]}"
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    facts, _ = plane
    as_reader = client.Configuration()
    as_reader.host = facts["server"]
    as_reader.ssl_ca_cert = api.configuration.ssl_ca_cert
    as_reader.api_key = {"authorization": f"Bearer {token}"}
    reader = client.CoreV1Api(client.ApiClient(as_reader))
    with pytest.raises(ApiException) as refused:
        reader.list_namespaced_config_map(namespace)
    assert refused.value.status == 403
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "read-config"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    assert wait_for(lambda: _can_list(reader, namespace), 10, "the binding to take effect")
    with pytest.raises(ApiException) as still_refused:
        reader.list_namespaced_secret(namespace)
    assert still_refused.value.status == 403


def _can_list(api: client.CoreV1Api, namespace: str) -> bool:
    try:
        api.list_namespaced_config_map(namespace)
    except ApiException as e:
        if e.status == 403:
            return False
        raise
    return True


def test_unknown_fields_are_refused_with_strict_validation(api):
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": f"strict-{uuid.uuid4().hex[:6]}"}, "data": {"a": "b"}, "dta": {"typo": "x"}}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_config_map("default", body, field_validation="Strict")
    assert refused.value.status == 400
    assert 'strict decoding error: unknown field "dta"' in json.loads(refused.value.body)["message"]


def test_a_deployments_pods_run_on_the_fake_node(api):
    namespace = f"run-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "web"}
    client.AppsV1Api(api).create_namespaced_deployment(namespace, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}}})
    wait_for(lambda: (client.AppsV1Api(api).read_namespaced_deployment("web", namespace).status.available_replicas
                      or 0) == 2, 60, "2 available replicas")
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    assert [p.status.phase for p in pods] == ["Running", "Running"]


def test_pods_and_nodes_have_loopback_addresses_and_services_no_endpoints(api):
    """So nothing that dials a pod, a node or a Service's endpoints can leave this machine: the API
    server's service proxy answers 503 rather than dialing."""
    loopback = ipaddress.ip_network("127.0.0.0/8")
    core = client.CoreV1Api(api)
    namespace = f"net-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    labels = {"app": "echo"}
    client.AppsV1Api(api).create_namespaced_deployment(namespace, {
        "metadata": {"name": "echo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "echo", "image": "example.invalid/echo:1",
                                     "ports": [{"containerPort": 8080}]}]}}}})
    core.create_namespaced_service(namespace, {"metadata": {"name": "echo"}, "spec": {
        "selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]}})
    [pod] = wait_for(lambda: [p for p in core.list_namespaced_pod(namespace).items if p.status.pod_ip], 60,
                     "the pod's IP")
    assert ipaddress.ip_address(pod.status.pod_ip) in loopback
    for node in core.list_node().items:
        assert all(ipaddress.ip_address(a.address) in loopback for a in node.status.addresses if a.type != "Hostname")
    # API validation refuses a loopback address in Endpoints, so the endpoints controller leaves the
    # Service without one to dial: its Endpoints are empty (written before the pod had its address) or
    # missing (the write with the address refused, retried with back-off). Either way the proxy refuses.
    answers = []

    def refused():
        try:
            core.connect_get_namespaced_service_proxy_with_path("echo:8080", namespace, "healthz")
        except ApiException as e:
            # 404 naming the Service: not yet in the API server's own view of it
            answers.append(f"{e.status} {e.body[:200]}")
            return e if e.status == 503 or (e.status == 404 and "endpoints" in e.body) else None
        raise AssertionError("the service proxy reached something")

    # (120 s: once, in a CI run with two workers, 60 s went by without the refusal)
    try:
        refusal = wait_for(refused, 120, "the service proxy to refuse")
    except AssertionError as e:
        raise AssertionError(f"{e}; its last answers: {answers[-3:]}") from None
    endpoints = read_or_none(core.read_namespaced_endpoints, "echo", namespace)
    assert endpoints is None or not [a for subset in endpoints.subsets or [] for a in subset.addresses or []], \
        endpoints.subsets
    assert ("no endpoints available" if refusal.status == 503 else 'endpoints "echo" not found') in refusal.body, \
        refusal.body


def test_a_deleted_namespace_is_finalized(api):
    namespace = f"gone-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "left"}, "data": {"a": "b"}})
    core.delete_namespace(namespace)

    def gone():
        try:
            core.read_namespace(namespace)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, 60, f"namespace {namespace} to be finalized")


def test_stopping_leaves_nothing_running(tmp_path):
    facts, processes = cluster.start(tmp_path, kubectl())
    ports = list(facts["ports"].values())
    cluster.stop(processes, tmp_path / "kwok")
    assert [p.name for p in processes if p.alive()] == []
    assert [port for port in ports if procs.port_open(port)] == []
    assert not cluster.cluster_dir(tmp_path / "kwok").exists()


def test_a_lab_on_the_real_control_plane_starts_and_stops_whole(tmp_path):
    """``python -m lab up --kube real``: moto, PostgreSQL, the control plane and the runner, healthy;
    ``down`` stops every one of them and their children and leaves no state."""
    import json
    import subprocess
    import sys

    from lab.core import REPO

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lab", "--dir", str(tmp_path / "lab"), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=300, check=False)

    up = cli("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"Kubernetes v{KUBERNETES}:" in up.stdout
    state = json.loads((tmp_path / "lab" / "state.json").read_text())
    assert state["kube"]["version"] == f"v{KUBERNETES}"
    names = {p["name"] for p in state["processes"]}
    assert {"moto", "postgres", "kube:kube-apiserver", "kube:etcd", "kube-runner"} <= names
    pids = [p["pid"] for p in state["processes"]]
    children = [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]
    status = cli("status")
    assert status.returncode == 0 and "lab is up" in status.stdout, status.stdout
    # the add-ons' CRDs, from their modules at the versions the lab runs, established
    crds = client.ApiextensionsV1Api(config.new_client_from_config(state["kube"]["kubeconfig"]))
    names = {c.metadata.name for c in crds.list_custom_resource_definition().items}
    assert {"scaledobjects.keda.sh", "triggerauthentications.keda.sh", "sealedsecrets.bitnami.com"} <= names
    # the KEDA chart assembled at start, with the certificate it made
    assert (tmp_path / "lab" / "charts" / "keda" / "Chart.yaml").is_file()
    down = cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert [p for p in pids + children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"] == []
    assert not (tmp_path / "lab" / "state.json").exists()
    assert not (tmp_path / "lab" / "kwok").exists()
    assert not (tmp_path / "lab" / "charts").exists()  # nor the chart, which held a private key
