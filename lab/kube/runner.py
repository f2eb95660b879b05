"""Runs the add-ons' controllers as host processes, for the Deployments their charts create.

kwok marks every pod Running without running anything. For the controllers the roles depend on, the
lab runs the real binary (built by ``make lab-build``) in the pod's place, as a kubelet would:

- with the pod's identity: a ServiceAccount token from the TokenRequest API, bound to the pod, and
  the cluster's CA, in ``/var/run/secrets/kubernetes.io/serviceaccount`` of a private mount
  namespace (``unshare --mount``; a tmpfs on ``/run`` there, so nothing on the host changes), and
  ``KUBERNETES_SERVICE_HOST``/``PORT`` naming the API server on 127.0.0.1; so RBAC decides what the
  controller may do, with the Role and ClusterRole its chart gave it; and a resolv.conf naming no
  server but 127.0.0.1, so that no lookup leaves the machine;
- with the container's own command arguments and plain environment, except the listen addresses,
  which become free ports on 127.0.0.1 (recorded in the state file this runner writes);
- until the Deployment is deleted (or its pod is replaced, which gets a new token).

Usage: ``python -m lab.kube.runner --kubeconfig FILE --state FILE --logs DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab import procs
from lab.components import COMPONENTS

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The controllers' name server: none, on loopback. A name a controller looks up never becomes a
# packet to the host's resolver (cluster names such as *.svc.cluster.local mean nothing here).
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
TOKEN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class HostController:
    """A controller whose Deployment the lab runs as a host process."""

    name: str
    selector: str  # label selector of its Deployment (and pods)
    binary: Path
    listen_flags: tuple[str, ...]  # flags whose value is an address to move to 127.0.0.1


CONTROLLERS = (
    HostController("sealed-secrets", "app.kubernetes.io/name=sealed-secrets",
                   COMPONENTS["sealed-secrets"].path("controller"), ("--listen-addr", "--listen-metrics-addr")),
)


def host_args(args: list[str], listen_flags: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The container's arguments with each listen address moved to a free port on 127.0.0.1; and the
    addresses given, by flag."""
    out, addresses, i = [], {}, 0
    while i < len(args):
        arg = args[i]
        flag, _, value = arg.partition("=")
        if flag in listen_flags:
            if not value:
                i += 1  # the value is the next argument
            address = f"127.0.0.1:{procs.free_port()}"
            addresses[flag] = address
            out.append(f"{flag}={address}")
        else:
            out.append(arg)
        i += 1
    for flag in listen_flags:  # the binary's own default would be all interfaces
        if flag not in addresses:
            addresses[flag] = f"127.0.0.1:{procs.free_port()}"
            out.append(f"{flag}={addresses[flag]}")
    return out, addresses


def container_env(container: client.V1Container, pod: client.V1Pod) -> dict[str, str]:
    """The container's plain values and the downward-API fields a kubelet would fill in."""
    env = {}
    fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
              "spec.serviceAccountName": pod.spec.service_account_name or "default",
              "spec.nodeName": pod.spec.node_name or ""}
    for var in container.env or []:
        if var.value is not None:
            env[var.name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var.value)
        elif var.value_from and var.value_from.field_ref and var.value_from.field_ref.field_path in fields:
            env[var.name] = fields[var.value_from.field_ref.field_path]
    return env


class Runner:
    def __init__(self, kubeconfig: str, state: Path, logs: Path):
        self.api = config.new_client_from_config(kubeconfig)
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        self.server = doc["clusters"][0]["cluster"]["server"]
        self.ca = Path(doc["clusters"][0]["cluster"]["certificate-authority"]).read_text()
        self.state, self.logs = state, logs
        self.running: dict[str, dict] = {}  # pod uid -> {"proc", "controller", "pod", "addresses", "dir"}

    def pods_to_run(self) -> dict[str, tuple[HostController, client.V1Pod]]:
        wanted = {}
        for controller in CONTROLLERS:
            for pod in self.core.list_pod_for_all_namespaces(label_selector=controller.selector).items:
                if pod.metadata.deletion_timestamp is None and pod.status.phase == "Running":
                    wanted[pod.metadata.uid] = (controller, pod)
        return wanted

    def start(self, controller: HostController, pod: client.V1Pod) -> dict:
        container = pod.spec.containers[0]
        namespace, account = pod.metadata.namespace, pod.spec.service_account_name or "default"
        token = self.core.create_namespaced_service_account_token(account, namespace, {"spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                               "uid": pod.metadata.uid}}}).status.token
        secrets = Path(tempfile.mkdtemp(prefix=f"{controller.name}-", dir=self.state.parent))
        files = (("token", token), ("ca.crt", self.ca), ("namespace", namespace), ("resolv.conf", RESOLV_CONF))
        for name, value in files:
            (secrets / name).write_text(value)
            (secrets / name).chmod(0o600)
        args, addresses = host_args(list(container.args or []), controller.listen_flags)
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        env = {"PATH": "/usr/bin:/bin", **container_env(container, pod),
               "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        # the pod's service-account folder, in a mount namespace of the controller's own
        script = (f'mount -t tmpfs lab-pod /run && mkdir -p {SA_DIR} && cp "$0"/token "$0"/ca.crt "$0"/namespace '
                  f'{SA_DIR}/ && mount --bind "$0"/resolv.conf /etc/resolv.conf && exec "$@"')
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(secrets),
                str(controller.binary), *args]
        log = self.logs / f"{controller.name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        return {"proc": proc, "controller": controller.name, "pod": f"{namespace}/{pod.metadata.name}",
                "addresses": addresses, "dir": secrets, "log": str(log)}

    def stop(self, uid: str) -> None:
        entry = self.running.pop(uid)
        entry["proc"].terminate()
        try:
            entry["proc"].wait(10)
        except subprocess.TimeoutExpired:
            entry["proc"].kill()
            entry["proc"].wait()
        shutil.rmtree(entry["dir"], ignore_errors=True)

    def write_state(self) -> None:
        doc = {entry["controller"]: {"pod": entry["pod"], "pid": entry["proc"].pid, "addresses": entry["addresses"],
                                     "log": entry["log"]}
               for entry in self.running.values() if entry["proc"].poll() is None}
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.state)

    def reconcile(self) -> None:
        try:
            wanted = self.pods_to_run()
        except (ApiException, OSError) as e:  # the API server restarting, or going away at lab down
            print(f"runner: cannot list pods: {e}", file=sys.stderr, flush=True)
            return
        for uid in [u for u in self.running if u not in wanted]:
            self.stop(uid)
        for uid, (controller, pod) in wanted.items():
            entry = self.running.get(uid)
            if entry is not None and entry["proc"].poll() is not None:  # it exited: start it again, as a kubelet
                print(f"runner: {entry['controller']} exited ({entry['proc'].returncode}); restarting", flush=True)
                self.stop(uid)
                entry = None
            if entry is None:
                try:
                    self.running[uid] = self.start(controller, pod)
                except ApiException as e:
                    print(f"runner: cannot start {controller.name}: {e.reason}", file=sys.stderr, flush=True)
        self.write_state()

    def run(self, interval: float = 1.0) -> None:
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        try:
            while not stopping:
                self.reconcile()
                time.sleep(interval)
        finally:
            for uid in list(self.running):
                self.stop(uid)
            with contextlib.suppress(OSError):
                self.write_state()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--logs", required=True, type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("runner: needs root for its private mount namespaces (unshare --mount)", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    Runner(args.kubeconfig, args.state, args.logs).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
