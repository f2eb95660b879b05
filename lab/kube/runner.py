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
- reporting the pod's status as a kubelet does: Running at once, Ready once the controller answers
  its health path (kwok is told to leave these pods alone, see :func:`lab.kube.cluster.stages`), after
  writing what it serves for others to read (the Sealed Secrets certificate, as ``kubeseal
  --fetch-cert`` would save it) into the ``--publish`` folder;
- until the pod is deleted (a replaced pod gets a new token), restarted if it exits.

Usage: ``python -m lab.kube.runner --kubeconfig FILE --state FILE --logs DIR --publish DIR``.
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
import urllib.request
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


NAME_LABEL = "app.kubernetes.io/name"


@dataclass(frozen=True)
class HostController:
    """A controller whose pods the lab runs as host processes: those labelled ``app.kubernetes.io/name``
    = ``name`` (as its chart labels them)."""

    name: str
    binary: Path
    listen_flags: tuple[str, ...]  # flags whose value is an address to move to 127.0.0.1
    ready_flag: str  # the listen flag whose address answers ready_path
    ready_path: str
    # a file the controller serves, written where the lab state says, before the pod is Ready
    publish_path: str | None = None

    @property
    def selector(self) -> str:
        return f"{NAME_LABEL}={self.name}"


CONTROLLERS = (
    HostController("sealed-secrets", COMPONENTS["sealed-secrets"].path("controller"),
                   ("--listen-addr", "--listen-metrics-addr"), "--listen-addr", "/healthz", "/v1/cert.pem"),
)


def host_run_names() -> list[str]:
    """The ``app.kubernetes.io/name`` of the pods the runner, not kwok, makes Ready."""
    return [c.name for c in CONTROLLERS]


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
    def __init__(self, kubeconfig: str, state: Path, logs: Path, publish: Path):
        self.api = config.new_client_from_config(kubeconfig)
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        self.server = doc["clusters"][0]["cluster"]["server"]
        self.ca = Path(doc["clusters"][0]["cluster"]["certificate-authority"]).read_text()
        self.state, self.logs, self.publish = state, logs, publish
        self.running: dict[str, dict] = {}  # pod uid -> {"proc", "controller", "pod", "addresses", "dir"}

    def pods_to_run(self) -> dict[str, tuple[HostController, client.V1Pod]]:
        """The controllers' pods that are scheduled and not being deleted."""
        wanted = {}
        for controller in CONTROLLERS:
            for pod in self.core.list_pod_for_all_namespaces(label_selector=controller.selector).items:
                if (pod.metadata.deletion_timestamp is None and pod.spec.node_name
                        and pod.status.phase in ("Pending", "Running")):
                    wanted[pod.metadata.uid] = (controller, pod)
        return wanted

    def set_ready(self, entry: dict, ready: bool) -> None:
        """Report the pod's status as a kubelet would: Running, and Ready once the controller answers."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        pod = entry["pod_object"]
        flag = "True" if ready else "False"
        status = {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": entry["started_at"],
            "conditions": [{"type": kind, "status": flag if kind in ("Ready", "ContainersReady") else "True",
                            "lastTransitionTime": now}
                           for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "", "ready": ready,
                                   "started": True, "restartCount": entry["restarts"],
                                   "state": {"running": {"startedAt": entry["started_at"]}}}
                                  for c in pod.spec.containers],
        }
        namespace, name = entry["pod"].split("/")
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status})
        entry["ready"] = ready

    def check_ready(self, entry: dict) -> None:
        controller = entry["controller_spec"]
        base = f"http://{entry['addresses'][controller.ready_flag]}"
        if fetch(base + controller.ready_path) is None:
            return
        if controller.publish_path:
            body = fetch(base + controller.publish_path)
            if body is None:
                return
            target = self.publish / f"{controller.name}-{Path(controller.publish_path).name}"
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(body)
            tmp.replace(target)
            entry["published"] = str(target)
        self.set_ready(entry, True)

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
        return {"proc": proc, "controller": controller.name, "controller_spec": controller, "pod_object": pod,
                "pod": f"{namespace}/{pod.metadata.name}", "addresses": addresses, "dir": secrets, "log": str(log),
                "ready": False, "restarts": 0, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

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
                                     "log": entry["log"], "ready": entry["ready"],
                                     "published": entry.get("published")}
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
            restarts = 0
            if entry is not None and entry["proc"].poll() is not None:  # it exited: start it again, as a kubelet
                print(f"runner: {entry['controller']} exited ({entry['proc'].returncode}); restarting", flush=True)
                restarts = entry["restarts"] + 1
                self.stop(uid)
                entry = None
            try:
                if entry is None:
                    entry = self.running[uid] = self.start(controller, pod)
                    entry["restarts"] = restarts
                    self.set_ready(entry, False)
                if not entry["ready"]:
                    self.check_ready(entry)
            except ApiException as e:
                print(f"runner: {controller.name}: {e.reason}", file=sys.stderr, flush=True)
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


def fetch(url: str) -> bytes | None:
    """The body of a 200 answer from a controller on loopback, or None."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read() if response.status == 200 else None
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--logs", required=True, type=Path)
    parser.add_argument("--publish", required=True, type=Path,
                        help="folder for the files the controllers serve (the Sealed Secrets certificate)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("runner: needs root for its private mount namespaces (unshare --mount)", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    args.publish.mkdir(parents=True, exist_ok=True)
    Runner(args.kubeconfig, args.state, args.logs, args.publish).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
