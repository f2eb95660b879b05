"""lab/kube/runner.py on the real control plane: the real Sealed Secrets chart (from the controller's
Go module) installed with helm, the real controller run by the runner with its pod's ServiceAccount,
unsealing what dbos.deploy's sealing code sealed and refusing a SealedSecret moved to another
namespace."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import subprocess
import uuid
from pathlib import Path

import psutil
import pytest
from ansible_collections.dbos.deploy.plugins.module_utils import sealed_secrets as ss
from kubernetes import client, config

from lab import build, procs
from lab.components import COMPONENTS
from lab.core import tool
from lab.kube import cluster, runner
from tests.sample_app.harness import read_or_none, wait_for

KEY = "k" * 32  # the digest key: any 32 characters


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A control plane with the real Sealed Secrets chart and the runner running its controller."""
    directory = tmp_path_factory.mktemp("runner")
    facts, processes = cluster.start(directory, tool("kubectl"))
    component = COMPONENTS["sealed-secrets"]
    chart = build.module_dir(component.module, component.version) / "helm" / "sealed-secrets"
    state, published = directory / "runner.json", directory / "published"
    supervisor = procs.spawn("runner", procs.python_module(
        "lab.kube.runner", "--kubeconfig", facts["kubeconfig"], "--state", str(state), "--logs",
        str(directory / "logs"), "--publish", str(published)), directory / "runner.log")
    try:
        # --wait: the Deployment is available only once the runner has the controller answering
        installed = subprocess.run([tool("helm"), "install", "sealed-secrets", str(chart), "-n", "kube-system",
                                    "--kubeconfig", facts["kubeconfig"], "--wait", "--timeout", "60s"],
                                   capture_output=True, text=True, check=False)
        assert installed.returncode == 0, installed.stderr
        controller = json.loads(state.read_text())["kube-system/sealed-secrets"]
        assert controller["ready"], controller
        cert_url = f"http://{controller['addresses']['--listen-addr']}/v1/cert.pem"
        pem = runner.fetch(cert_url)
        yield {"api": config.new_client_from_config(facts["kubeconfig"]), "controller": controller, "pem": pem,
               "state": state, "runner": supervisor, "published": published}
    finally:
        procs.stop(supervisor)
        cluster.stop(processes, directory / "kwok")


def test_the_controller_runs_as_its_pods_service_account(sealed):
    controller = sealed["controller"]
    namespace, pod = controller["pod"].split("/")
    assert namespace == "kube-system" and pod.startswith("sealed-secrets-")
    # its pod reported as the runner reports it (kwok leaves it alone), and its certificate published
    status = client.CoreV1Api(sealed["api"]).read_namespaced_pod(pod, namespace).status
    assert (status.phase, status.pod_ip) == ("Running", "127.0.0.1")
    assert {c.type: c.status for c in status.conditions}["Ready"] == "True"
    assert Path(controller["published"]) == sealed["published"] / "kube-system" / "sealed-secrets-cert.pem"
    assert Path(controller["published"]).read_bytes() == sealed["pem"]
    # the key it generated, in a Secret only its RBAC lets it write
    keys = client.CoreV1Api(sealed["api"]).list_namespaced_secret(
        "kube-system", label_selector="sealedsecrets.bitnami.com/sealed-secrets-key=active").items
    assert len(keys) == 1
    assert ss.load_public_key(sealed["pem"]) is not None
    # the real binary, with its pod's service-account folder and no name server, both in its own
    # mount namespace only; on loopback only
    process = psutil.Process(controller["pid"])
    root = Path(f"/proc/{process.pid}/root")
    # (/var/run is a link to /run: followed under /proc/PID/root it would lead to this namespace's /run)
    assert (root / runner.SA_DIR.removeprefix("/var/") / "namespace").read_text() == "kube-system"
    assert (root / "etc" / "resolv.conf").read_text() == runner.RESOLV_CONF
    assert not Path(runner.SA_DIR).exists()
    assert process.exe() == str(COMPONENTS["sealed-secrets"].path("controller"))
    loopback = ipaddress.ip_network("127.0.0.0/8")
    for conn in process.net_connections(kind="inet"):
        assert ipaddress.ip_address(conn.laddr.ip) in loopback, conn
        if conn.raddr:
            assert ipaddress.ip_address(conn.raddr.ip) in loopback, conn


def test_what_the_collection_seals_the_real_controller_opens(sealed):
    core = client.CoreV1Api(sealed["api"])
    namespace = f"sealed-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    values = {"password": "s3cr3t/:@?#%", "database-url": "postgresql://app:pw@db:5432/dbos_app"}
    document = ss.seal(ss.load_public_key(sealed["pem"]),
                       {"name": "app-db", "namespace": namespace, "scope": "strict", "data": values}, KEY)
    custom = client.CustomObjectsApi(sealed["api"])
    custom.create_namespaced_custom_object("bitnami.com", "v1alpha1", namespace, "sealedsecrets", document,
                                           field_validation="Strict")
    secret = wait_for(lambda: read_or_none(core.read_namespaced_secret, "app-db", namespace), 30,
                      "the controller to unseal it")
    # compared by hash: no value is printed if they differ
    got = {k: hashlib.sha256(base64.b64decode(v)).hexdigest() for k, v in secret.data.items()}
    assert got == {k: hashlib.sha256(v.encode()).hexdigest() for k, v in values.items()}
    assert secret.metadata.owner_references[0].kind == "SealedSecret"

    # the same ciphertext under another namespace: its label (namespace/name) does not match
    other = f"moved-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": other}})
    moved = {**document, "metadata": {**document["metadata"], "namespace": other}}
    moved["spec"] = {**document["spec"], "template": {**document["spec"]["template"], "metadata": {
        **document["spec"]["template"]["metadata"], "namespace": other}}}
    custom.create_namespaced_custom_object("bitnami.com", "v1alpha1", other, "sealedsecrets", moved)

    def refused():
        obj = custom.get_namespaced_custom_object("bitnami.com", "v1alpha1", other, "sealedsecrets", "app-db")
        return [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Synced"
                and c["status"] == "False"]

    [condition] = wait_for(refused, 30, "the controller to refuse the moved SealedSecret")
    assert "decrypt" in condition.get("message", "").lower(), condition
    assert read_or_none(core.read_namespaced_secret, "app-db", other) is None


def test_kubectl_logs_shows_the_controllers_own_output(sealed):
    """The runner keeps the controller's output in the CRI log format and kwok serves it: the API
    server's pod log endpoint, as ``kubectl logs`` and kubernetes.core.k8s_log read it."""
    namespace, pod = sealed["controller"]["pod"].split("/")
    core = client.CoreV1Api(sealed["api"])
    def served():  # kwok sees the pod's Logs object through a watch: a moment after the runner made it
        try:
            return core.read_namespaced_pod_log(pod, namespace)
        except client.ApiException as e:
            if e.status == 400 and "no logs found" in (e.body or ""):
                return None
            raise

    log = wait_for(served, 30, "kwok to serve the log")
    assert 'msg="Starting sealed-secrets controller" version=v0.36.6' in log.splitlines()[0]
    assert "HTTP server serving" in log
    tail = core.read_namespaced_pod_log(pod, namespace, tail_lines=1, timestamps=True)
    assert len(tail.splitlines()) == 1 and tail[:4].isdigit()  # each line has the time it was written


def test_listen_addresses_move_to_loopback_and_loopback_ones_stay():
    args, values = runner.host_args(
        ["--listen-addr", ":8080", "--metrics-service-bind-address=127.0.0.1:9666", "--leader-elect", "--port=8080"],
        ("--listen-addr", "--metrics-service-bind-address", "--health-probe-bind-address"), ("--port",))
    host, port = values["--listen-addr"].rsplit(":", 1)
    assert host == "127.0.0.1" and port != "8080"
    assert values["--metrics-service-bind-address"] == "127.0.0.1:9666"  # the chart put it on loopback
    assert values["--health-probe-bind-address"].startswith("127.0.0.1:")  # not given: the default is :8081
    assert values["--port"].isdigit() and values["--port"] != "8080"
    assert args == [f"--listen-addr={values['--listen-addr']}", "--metrics-service-bind-address=127.0.0.1:9666",
                    "--leader-elect", f"--port={values['--port']}",
                    f"--health-probe-bind-address={values['--health-probe-bind-address']}"]


def test_a_mount_path_in_the_arguments_becomes_the_volumes_folder():
    mounts = {"/certs": "/run/lab-pod/volumes/certificates", "/certs/extra": "/run/lab-pod/volumes/extra"}
    assert runner.with_volumes(["--cert-dir=/certs", "--tls-cert-file=/certs/tls.crt", "--ca=/certs/extra/ca.crt",
                                "--other=/certsx/a", "--path=/x/certs"], mounts) == [
        "--cert-dir=/run/lab-pod/volumes/certificates", "--tls-cert-file=/run/lab-pod/volumes/certificates/tls.crt",
        "--ca=/run/lab-pod/volumes/extra/ca.crt", "--other=/certsx/a", "--path=/x/certs"]


def test_kwok_leaves_every_host_run_pod_to_the_runner():
    [ready] = [s for s in cluster.stages(runner.host_run_labels()) if s["metadata"]["name"] == "pod-ready"]
    expressions = ready["spec"]["selector"]["matchExpressions"]
    excluded = {e["key"]: e["values"] for e in expressions if e["operator"] == "NotIn" and "labels" in e["key"]}
    assert excluded == {'.metadata.labels["app.kubernetes.io/name"]': ["sealed-secrets"],
                        '.metadata.labels["app"]': ["keda-metrics-apiserver", "keda-operator"]}


def test_the_hosts_file_keeps_what_it_knew_when_moto_answers_500():
    """moto answers 500 now and then (while a test resets it): the runner's RDS lookup keeps the
    names it had instead of failing (it once took the runner down with it)."""
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>500 Internal Server Error</title>")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        names = runner.Names(f"http://127.0.0.1:{server.server_port}", "127.2.0.9")
        names.endpoints = ("db.aaaaaaaaaa.us-west-2.rds.amazonaws.com",)
        assert not names.changed()
        assert names.hosts().splitlines() == ["127.0.0.1 localhost", "::1 localhost",
                                              "127.2.0.9 db.aaaaaaaaaa.us-west-2.rds.amazonaws.com"]
    finally:
        server.shutdown()


def test_a_volume_over_tmp_does_not_hide_the_checkout_the_container_runs_from(tmp_path):
    """A checkout under /tmp (as CI's fresh clone is) and an emptyDir at /tmp: the checkout's folders
    are mounted again over the volume, so the venv's entrypoint is still found; a folder outside the
    volume's path is not remounted. The script is run for real, in a mount namespace of its own."""
    pod, checkout, volume = tmp_path / "pod", tmp_path / "checkout", tmp_path / "empty"
    for folder in (pod, checkout / "bin", volume):
        folder.mkdir(parents=True)
    for name in ("token", "ca.crt", "namespace", "resolv.conf", "hosts"):
        (pod / name).write_text("")
    (checkout / "bin" / "hello").write_text("#!/bin/sh\necho hello from the checkout; ls /tmp\n")
    (checkout / "bin" / "hello").chmod(0o755)
    script = runner._mount_script({"/tmp": runner.Volume(volume, read_only=False)}, {"/tmp": str(volume)},
                                  {"/tmp": str(volume)}, "/", keep=(str(checkout), "/usr/share"))
    assert f"mount --bind /run/lab-keep/0 {checkout}" in script
    assert "mount --bind /run/lab-keep/1" not in script  # /usr/share is not under /tmp
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(pod),
                           str(checkout / "bin" / "hello")], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    # the checkout ran, and /tmp is the volume (only the folders leading to the checkout are in it)
    assert done.stdout.splitlines() == ["hello from the checkout", tmp_path.parts[2]]
