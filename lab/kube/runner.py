"""Runs the add-ons' controllers as host processes, for the Deployments their charts create.

kwok marks every pod Running without running anything. For the controllers the roles depend on, the
lab runs the real binary (built by ``make lab-build``) in the pod's place, as a kubelet would:

- with the pod's identity: a ServiceAccount token from the TokenRequest API, bound to the pod, and
  the cluster's CA, in ``/var/run/secrets/kubernetes.io/serviceaccount`` of a private mount
  namespace (``unshare --mount``; a tmpfs on ``/run`` there, so nothing on the host changes), and
  ``KUBERNETES_SERVICE_HOST``/``PORT`` naming the API server on 127.0.0.1; so RBAC decides what the
  controller may do, with the Role and ClusterRole its chart gave it; and a resolv.conf naming no
  server but 127.0.0.1, so that no lookup leaves the machine, and a hosts file naming the lab's RDS
  instances' endpoints (in moto) at the lab's PostgreSQL front (:class:`Names`, :mod:`lab.pg_front`);
- with the container's own command arguments and plain environment, except the listen addresses
  not on loopback, which become free ports on 127.0.0.1 (recorded in the state file this runner
  writes);
- with its Secret, ConfigMap and emptyDir volumes filled in folders of its own: mounted where the
  container mounts them when this machine has that folder (``/tmp``), else named in the arguments by
  their folder here (``--cert-dir=/certs`` becomes that folder), since the runner creates nothing
  outside its own folders; a pod whose Secret does not exist yet waits, as a kubelet's would;
- reporting the pod's status as a kubelet does: Running at once, Ready once the controller answers
  its health path (kwok is told to leave these pods alone, see :func:`lab.kube.cluster.stages`), after
  writing what it serves for others to read (the Sealed Secrets certificate, as ``kubeseal
  --fetch-cert`` would save it) into the ``--publish`` folder, under the pod's namespace;
- with its output kept as a container runtime keeps it (CRI log format, one file per container)
  and served by kwok for ``kubectl logs`` (a kwok ``Logs`` object per pod);
- until the pod is deleted (a replaced pod gets a new token), restarted if it exits.

Usage: ``python -m lab.kube.runner --kubeconfig FILE --state FILE --logs DIR --publish DIR``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab import procs
from lab.components import COMPONENTS

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LOGS_GROUP = "kwok.x-k8s.io"  # kwok's Logs objects: which file kwok serves as a container's log
POD_DIR = "/run/lab-pod"  # the runner's folder for the pod, as the controller sees it
# The controllers' name server: none, on loopback. A name a controller looks up never becomes a
# packet to the host's resolver (cluster names such as *.svc.cluster.local mean nothing here).
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
TOKEN_SECONDS = 24 * 3600
BACKOFF_FIRST, BACKOFF_MAX = 1, 30  # seconds; a kubelet's are 10 and 300 (the lab's tests are shorter)


@dataclass(frozen=True)
class HostController:
    """A controller whose pods the lab runs as host processes: those with label ``label`` = ``name``
    (as its chart labels them).

    ``listen_flags``: flags whose value is an address; one not on loopback (the binary's default is
    all interfaces) moves to a free port on 127.0.0.1; one the chart already put on loopback stays.
    ``port_flags``: flags whose value is a bare port (the binary binds it on every interface, and has
    no flag for the address): a free port. ``ready``: the URL a kubelet's readiness probe would ask,
    from the final flags (``{--flag}`` is that flag's value)."""

    name: str
    binary: Path
    ready: str
    label: str = "app.kubernetes.io/name"
    listen_flags: tuple[str, ...] = ()
    port_flags: tuple[str, ...] = ()
    # a file the controller serves (path on the ready URL's server), written to the lab's publish
    # folder before the pod is Ready
    publish_path: str | None = None

    @property
    def selector(self) -> str:
        return f"{self.label}={self.name}"


def _keda(name: str) -> Path:
    return COMPONENTS["keda"].path(name)


CONTROLLERS = (
    HostController("sealed-secrets", COMPONENTS["sealed-secrets"].path("controller"), "http://{--listen-addr}/healthz",
                   listen_flags=("--listen-addr", "--listen-metrics-addr"), publish_path="/v1/cert.pem"),
    # KEDA's own manifests label the pod templates app=<name> (no app.kubernetes.io/name)
    HostController("keda-operator", _keda("keda"), "http://{--health-probe-bind-address}/readyz", label="app",
                   listen_flags=("--metrics-bind-address", "--health-probe-bind-address",
                                 "--metrics-service-bind-address")),
    HostController("keda-metrics-apiserver", _keda("keda-adapter"), "https://{--bind-address}:{--secure-port}/readyz",
                   label="app", port_flags=("--port",)),
)


def host_run_labels() -> dict[str, list[str]]:
    """The labels (label -> values) of the pods the runner, not kwok, makes Ready."""
    labels: dict[str, list[str]] = {}
    for controller in CONTROLLERS:
        labels.setdefault(controller.label, []).append(controller.name)
    return labels


def _on_loopback(address: str) -> bool:
    return address.rpartition(":")[0].startswith("127.")


def host_args(args: list[str], listen_flags: tuple[str, ...], port_flags: tuple[str, ...] = ()
              ) -> tuple[list[str], dict[str, str]]:
    """The container's arguments with each listen address off loopback moved to a free port on
    127.0.0.1, and each port flag given a free port; and the values of those flags, by flag."""
    out, values, i = [], {}, 0
    while i < len(args):
        arg = args[i]
        flag, equals, value = arg.partition("=")
        if flag in listen_flags or flag in port_flags:
            if not equals:
                i += 1  # the value is the next argument
                value = args[i] if i < len(args) else ""
            if flag in port_flags:
                value = str(procs.free_port())
            elif not _on_loopback(value):
                value = f"127.0.0.1:{procs.free_port()}"
            values[flag] = value
            out.append(f"{flag}={value}")
        else:
            out.append(arg)
        i += 1
    for flag in (*listen_flags, *port_flags):  # not given: the binary's own default is all interfaces
        if flag not in values:
            values[flag] = str(procs.free_port()) if flag in port_flags else f"127.0.0.1:{procs.free_port()}"
            out.append(f"{flag}={values[flag]}")
    return out, values


def flag_values(args: list[str]) -> dict[str, str]:
    """``--flag=value`` arguments, by flag."""
    return dict(arg.split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def with_volumes(args: list[str], mounts: dict[str, str]) -> list[str]:
    """The arguments with each mount path (``mountPath`` -> the folder holding the volume) that
    starts a path in them replaced by its folder: a container's mount at, say, ``/certs`` cannot be
    made on this machine without creating ``/certs`` on it."""
    for mount_path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
        pattern = re.compile(rf"(?<![\w/.]){re.escape(mount_path.rstrip('/'))}(?=/|$)")
        args = [pattern.sub(lambda _m, f=folder: f, arg) for arg in args]
    return args


def container_env(container: client.V1Container, pod: client.V1Pod) -> dict[str, str]:
    """The container's plain values and the downward-API fields a kubelet would fill in."""
    env = {}
    fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
              "spec.serviceAccountName": pod.spec.service_account_name or "default",
              "spec.nodeName": pod.spec.node_name or ""}
    for var in container.env or []:
        if var.value_from is None:  # an empty value is left out of the API's answer: set, and empty
            env[var.name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var.value or "")
        elif var.value_from and var.value_from.field_ref and var.value_from.field_ref.field_path in fields:
            env[var.name] = fields[var.value_from.field_ref.field_path]
    return env


class Runner:
    def __init__(self, kubeconfig: str, state: Path, logs: Path, publish: Path, names: Names | None = None):
        self.names = names or Names()
        self.api = config.new_client_from_config(kubeconfig)
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        self.server = doc["clusters"][0]["cluster"]["server"]
        self.ca = Path(doc["clusters"][0]["cluster"]["certificate-authority"]).read_text()
        self.state, self.logs, self.publish = state, logs, publish
        self.running: dict[str, dict] = {}  # pod uid -> {"proc", "controller", "pod", "addresses", "dir"}
        self.crashed: dict[str, tuple[int, float]] = {}  # pod uid -> (restarts, when to start it again)

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
        url = controller.ready.format_map(flag_values(entry["args"]))
        if fetch(url) is None:
            return
        if controller.publish_path:
            body = fetch(urllib.parse.urljoin(url, controller.publish_path))
            if body is None:
                return
            namespace = entry["pod"].split("/")[0]
            target = self.publish / namespace / f"{controller.name}-{Path(controller.publish_path).name}"
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(body)
            tmp.replace(target)
            entry["published"] = str(target)
        self.set_ready(entry, True)

    def volumes(self, pod: client.V1Pod, container: client.V1Container, folder: Path) -> dict[str, Path]:
        """The container's volumes as folders here (mountPath -> folder), filled as a kubelet fills
        them: a Secret's or ConfigMap's keys as files, an emptyDir empty. Raises :class:`NotYet` while
        a Secret or ConfigMap the pod needs does not exist."""
        by_name = {v.name: v for v in pod.spec.volumes or []}
        mounts = {}
        for mount in container.volume_mounts or []:
            volume = by_name.get(mount.name)
            if volume is None or mount.sub_path:
                continue
            target = folder / "volumes" / mount.name
            target.mkdir(parents=True, exist_ok=True)
            source = volume.secret or volume.config_map
            if source is not None:
                data = self._volume_data(pod.metadata.namespace, volume)
                if data is None and not source.optional:
                    raise NotYet(f"{'Secret' if volume.secret else 'ConfigMap'} for volume {mount.name}")
                items = {i.key: i.path for i in source.items or []} or {k: k for k in data or {}}
                for key, path in items.items():
                    if data and key in data:
                        (target / path).parent.mkdir(parents=True, exist_ok=True)
                        (target / path).write_bytes(data[key])
                        (target / path).chmod(0o400 if volume.secret else 0o444)
            elif volume.empty_dir is None:
                continue  # a kind of volume none of the controllers uses
            mounts[mount.mount_path] = target
        return mounts

    def _volume_data(self, namespace: str, volume: client.V1Volume) -> dict[str, bytes] | None:
        try:
            if volume.secret:
                secret = self.core.read_namespaced_secret(volume.secret.secret_name, namespace)
                return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            config_map = self.core.read_namespaced_config_map(volume.config_map.name, namespace)
            return {k: v.encode() for k, v in (config_map.data or {}).items()}
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def start(self, controller: HostController, pod: client.V1Pod) -> dict:
        container = pod.spec.containers[0]
        namespace, account = pod.metadata.namespace, pod.spec.service_account_name or "default"
        folder = Path(tempfile.mkdtemp(prefix=f"{controller.name}-", dir=self.state.parent))
        try:
            mounts = self.volumes(pod, container, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        token = self.core.create_namespaced_service_account_token(account, namespace, {"spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                               "uid": pod.metadata.uid}}}).status.token
        files = (("token", token), ("ca.crt", self.ca), ("namespace", namespace), ("resolv.conf", RESOLV_CONF),
                 ("hosts", self.names.hosts()))
        for name, value in files:
            (folder / name).write_text(value)
            (folder / name).chmod(0o600)
        # a mount at a folder this machine has is made in the controller's mount namespace; one at a
        # path it lacks is given by its folder here, in the arguments that name it
        # (seen from inside, the pod's folder is at POD_DIR: a mount on /tmp would hide where it is here)
        inside = {path: f"{POD_DIR}/{target.relative_to(folder)}" for path, target in mounts.items()}
        bound = {path: inside[path] for path in mounts if Path(path).is_dir() and path != "/run"}
        args = with_volumes(list(container.args or []), {p: t for p, t in inside.items() if p not in bound})
        args, addresses = host_args(args, controller.listen_flags, controller.port_flags)
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        env = {"PATH": "/usr/bin:/bin", **container_env(container, pod),
               "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        # the pod's service-account folder, in a mount namespace of the controller's own
        binds = "".join(f" && mount --bind {shlex.quote(t)} {shlex.quote(p)}" for p, t in sorted(bound.items()))
        script = (f'mount -t tmpfs lab-pod /run && mkdir -p {SA_DIR} {POD_DIR} && mount --bind "$0" {POD_DIR} && '
                  f'cp "$0"/token "$0"/ca.crt "$0"/namespace {SA_DIR}/ && mount --bind "$0"/resolv.conf '
                  f'/etc/resolv.conf && mount --bind "$0"/hosts /etc/hosts{binds} && exec "$@"')
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(folder),
                str(controller.binary), *args]
        log = self.logs / f"{namespace}.{pod.metadata.name}.{container.name}.log"
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
        write_log(proc, log)
        return {"proc": proc, "controller": controller.name, "controller_spec": controller, "pod_object": pod,
                "pod": f"{namespace}/{pod.metadata.name}", "container": container.name, "addresses": addresses,
                "args": args, "dir": folder,
                "log": str(log), "ready": False, "restarts": 0,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def serve_log(self, pod: client.V1Pod, container: str, log: Path) -> None:
        """Have kwok serve ``log`` as the container's log (``kubectl logs``), as a kubelet serves the
        log the container runtime keeps: a kwok ``Logs`` object for the pod, owned by it (so it goes
        with the pod)."""
        body = {"apiVersion": f"{LOGS_GROUP}/v1alpha1", "kind": "Logs",
                "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                                  "uid": pod.metadata.uid}]},
                "spec": {"logs": [{"containers": [container], "logsFile": str(log)}]}}
        custom = client.CustomObjectsApi(self.api)
        try:
            custom.create_namespaced_custom_object(LOGS_GROUP, "v1alpha1", pod.metadata.namespace, "logs", body)
        except ApiException as e:
            if e.status != 409:  # a restart: the same file, already served
                raise

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
        # by <namespace>/<controller>: a second release of a chart runs a second controller
        doc = {}
        for entry in self.running.values():
            if entry["proc"].poll() is None:
                doc[f"{entry['pod'].split('/')[0]}/{entry['controller']}"] = {
                    "pod": entry["pod"], "pid": entry["proc"].pid, "addresses": entry["addresses"],
                    "ready_url": entry["controller_spec"].ready.format_map(flag_values(entry["args"])),
                    "log": entry["log"], "ready": entry["ready"], "published": entry.get("published")}
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.state)

    def tend(self, uid: str, controller: HostController, pod: client.V1Pod) -> None:
        """One pod, as a kubelet tends it: started, restarted with a back-off if it exited, its log
        served, Ready once the controller answers."""
        entry = self.running.get(uid)
        if entry is not None and entry["proc"].poll() is not None:  # it exited: start it again, as a kubelet
            restarts = entry["restarts"] + 1
            delay = min(BACKOFF_FIRST * 2 ** (restarts - 1), BACKOFF_MAX)  # kubelet's CrashLoopBackOff
            print(f"runner: {entry['controller']} exited ({entry['proc'].returncode}); restarting in {delay} s",
                  flush=True)
            self.crashed[uid] = (restarts, time.monotonic() + delay)
            self.stop(uid)
            entry = None
        restarts, not_before = self.crashed.get(uid, (0, 0.0))
        if entry is None and time.monotonic() < not_before:
            return
        try:
            if entry is None:
                entry = self.running[uid] = self.start(controller, pod)
                entry["restarts"] = restarts
                self.set_ready(entry, False)
            if not entry["ready"]:
                self.check_ready(entry)
        except NotYet as e:  # as a kubelet leaves a pod ContainerCreating
            print(f"runner: {controller.name} waits for its {e}", file=sys.stderr, flush=True)
            return
        except ApiException as e:
            print(f"runner: {controller.name}: {e.reason}", file=sys.stderr, flush=True)
            return
        if not entry.get("log_served"):  # kwok's Logs kind may not be there yet at start: tried again
            try:
                self.serve_log(entry["pod_object"], entry["container"], Path(entry["log"]))
                entry["log_served"] = True
            except ApiException as e:
                print(f"runner: {controller.name}: the log is not served yet: {e.reason}", file=sys.stderr,
                      flush=True)

    def reconcile(self) -> None:
        try:
            wanted = self.pods_to_run()
        except (ApiException, OSError) as e:  # the API server restarting, or going away at lab down
            print(f"runner: cannot list pods: {e}", file=sys.stderr, flush=True)
            return
        for uid in [u for u in self.running if u not in wanted]:
            self.stop(uid)
        if self.names.changed():  # a database made since: every running controller resolves it now
            for entry in self.running.values():
                refresh(entry["dir"] / "hosts", self.names.hosts())
        for uid in [u for u in self.crashed if u not in wanted]:
            del self.crashed[uid]
        for uid, (controller, pod) in wanted.items():
            self.tend(uid, controller, pod)
        self.write_state()

    def run(self, interval: float = 1.0) -> None:
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        try:
            while not stopping:
                try:
                    self.reconcile()
                except Exception:  # as a kubelet, keep tending the pods whatever one round met
                    traceback.print_exc()
                time.sleep(interval)
        finally:
            for uid in list(self.running):
                self.stop(uid)
            with contextlib.suppress(OSError):
                self.write_state()


class Names:
    """The hosts file of the processes the runner runs: localhost, and each RDS instance's endpoint
    in the lab's moto naming the lab's PostgreSQL front, as the VPC's resolver names the instance
    on AWS. Nothing else resolves (see :data:`RESOLV_CONF`)."""

    REFRESH_SECONDS = 5.0

    def __init__(self, aws_endpoint: str | None = None, db_address: str | None = None):
        self.aws_endpoint, self.db_address = aws_endpoint, db_address
        self.endpoints: tuple[str, ...] = ()
        self.checked = -self.REFRESH_SECONDS

    def _lookup(self) -> tuple[str, ...]:
        if not (self.aws_endpoint and self.db_address):
            return ()
        import boto3

        from lab import aws

        rds = boto3.client("rds", endpoint_url=self.aws_endpoint, region_name=aws.DEFAULT_REGION,
                           aws_access_key_id=aws.ACCESS_KEY, aws_secret_access_key=aws.SECRET_KEY)
        try:
            found = rds.describe_db_instances()["DBInstances"]
        except Exception as e:  # moto starting, resetting or answering 500: what was known
            print(f"runner: cannot list the RDS instances: {e}", file=sys.stderr, flush=True)
            return self.endpoints
        return tuple(sorted(i["Endpoint"]["Address"] for i in found if i.get("Endpoint", {}).get("Address")))

    def changed(self) -> bool:
        """Look again (every few seconds); did the endpoints change?"""
        if time.monotonic() - self.checked < self.REFRESH_SECONDS:
            return False
        self.checked = time.monotonic()
        endpoints = self._lookup()
        if endpoints == self.endpoints:
            return False
        self.endpoints = endpoints
        return True

    def hosts(self) -> str:
        self.changed()
        return "127.0.0.1 localhost\n::1 localhost\n" + "".join(f"{self.db_address} {e}\n" for e in self.endpoints)


def refresh(path: Path, text: str) -> None:
    """Rewrite ``path`` in place: the same file, bind-mounted over /etc/hosts, shows the new text."""
    with open(path, "r+") as out:
        out.seek(0)
        out.write(text)
        out.truncate()


def write_log(proc: subprocess.Popen, path: Path) -> None:
    """Append the process's stdout and stderr to ``path`` in the CRI log format a kubelet's container
    runtime writes (``<RFC 3339 time> stdout|stderr F <line>``), which kwok serves; until both close."""
    path.touch()
    lock = threading.Lock()

    def copy(stream, name: str) -> None:
        with stream, open(path, "ab") as out:
            for line in stream:
                stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                with lock:
                    out.write(f"{stamp} {name} F ".encode() + line.rstrip(b"\n") + b"\n")
                    out.flush()

    for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
        threading.Thread(target=copy, args=(stream, name), daemon=True).start()


class NotYet(Exception):
    """Something a pod needs before its container can start is missing."""


# A controller's own serving certificate is not checked by the probe, as a kubelet does not.
_PROBE_TLS = ssl.create_default_context()
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE


def fetch(url: str) -> bytes | None:
    """The body of a 200 answer from a controller on loopback, or None."""
    try:
        context = _PROBE_TLS if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
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
    parser.add_argument("--aws-endpoint", help="the lab's moto, whose RDS endpoints the controllers resolve")
    parser.add_argument("--db-address", help="where those names lead: the lab's PostgreSQL front (lab.pg_front)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("runner: needs root for its private mount namespaces (unshare --mount)", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    args.publish.mkdir(parents=True, exist_ok=True)
    Runner(args.kubeconfig, args.state, args.logs, args.publish, Names(args.aws_endpoint, args.db_address)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
