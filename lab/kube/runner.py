"""The lab's kubelet for the pods it runs: the add-ons' controllers, and the containers of the lab's
images (the sample app, the migration image, the postgres client; :mod:`lab.kube.images`).

kwok marks every other pod Running without running anything (see :func:`lab.kube.cluster.stages`).
For these, the runner runs the container's process on this machine, as a kubelet would:

- with the pod's identity: a ServiceAccount token from the TokenRequest API, bound to the pod, and
  the cluster's CA, in ``/var/run/secrets/kubernetes.io/serviceaccount`` of a private mount
  namespace (``unshare --mount``; a tmpfs on ``/run`` there, so nothing on the host changes), and
  ``KUBERNETES_SERVICE_HOST``/``PORT`` naming the API server on 127.0.0.1; so RBAC decides what the
  controller may do, with the Role and ClusterRole its chart gave it; and a resolv.conf naming no
  server but 127.0.0.1, so that no lookup leaves the machine, and a hosts file (:class:`Names`)
  naming the lab's RDS instances' endpoints (in moto) at the lab's PostgreSQL front
  (:mod:`lab.pg_front`), and each Service's cluster names at its Ready pods' addresses;
- a controller with its container's own arguments, except the listen addresses not on loopback,
  which become free ports on 127.0.0.1 (recorded in the state file this runner writes); a container
  of the lab's images with its ``command``/``args`` over the image's entrypoint, its ``env``
  (values, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``) read from the API, its working
  directory, and an address of its own in :data:`POD_NETWORK` (the pod IP), where its container
  ports are: its Python processes' listeners on all interfaces bind there (:data:`BIND_SHIM`), and
  ``kubectl port-forward`` reaches them (a kwok ``PortForward`` object); this machine's root
  filesystem is read-only to it (there is no container layer);
- with its Secret, ConfigMap and emptyDir volumes filled in folders of its own (Secrets and
  ConfigMaps read-only): mounted where the container mounts them when this machine has that folder
  (``/tmp``), else named in the arguments and environment by their folder here (``--cert-dir=/certs``
  becomes that folder), since the runner creates nothing outside its own folders; a pod whose Secret
  or key does not exist yet waits, as a kubelet's would;
- reporting the pod's status as a kubelet does: Running at once; Ready once a controller answers its
  health path (after writing what it serves for others to read, the Sealed Secrets certificate as
  ``kubeseal --fetch-cert`` would save it, into the ``--publish`` folder under the pod's namespace),
  or as the pod's own httpGet readiness probe says (its delay, period and threshold), a liveness
  probe's failures restarting the container; a container that exits is restarted with a back-off
  (``restartPolicy`` Always, OnFailure), or its exit code ends the pod (Succeeded or Failed), which
  is how a Job completes or fails;
- with its output kept as a container runtime keeps it (CRI log format, one file per container)
  and served by kwok for ``kubectl logs`` (a kwok ``Logs`` object per pod);
- until the pod is deleted: then SIGTERM, SIGKILL after the deletion's grace period, and only once
  the process is gone is the pod object removed.

What a kubelet does and the runner does not: resource limits, ``runAsUser`` (processes run as the
runner's user), init containers and pods of more than one container of the lab's images, exec and
TCP probes, a network namespace per pod (see :data:`BIND_SHIM`), and the Service's port mapping
(the Service names resolve to the pods' addresses: the Service's port must be its pods' port).

Usage: ``python -m lab.kube.runner --kubeconfig FILE --state FILE --logs DIR --publish DIR
[--aws-endpoint URL --db-address IP] [--images DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab import procs
from lab.components import COMPONENTS
from lab.kube import images

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LOGS_GROUP = "kwok.x-k8s.io"  # kwok's Logs objects: which file kwok serves as a container's log
POD_DIR = "/run/lab-pod"  # the runner's folder for the pod, as the controller sees it
HOST_IP = "127.0.0.1"  # the node's address (cluster.NODE_IP), and the controllers' pods' (they bind there)
# the pods of the lab's images each get an address of their own here, where their container ports are
POD_NETWORK = "127.64.0.0/10"
# The lab's stand-in for a pod's network namespace, for the Python images: this machine has one
# network for all pods, so a listener on all interfaces (0.0.0.0, as a server in a pod binds)
# binds its pod's own address, and two pods can both listen on port 8080.
BIND_SHIM = '''\
# Written by the lab's pod runner (lab/kube/runner.py): a listener on all interfaces (0.0.0.0)
# binds this pod's address, {pod_ip}, as it would in the pod's own network namespace.
import socket as _socket

_bind = _socket.socket.bind


def _pod_bind(self, address, _bind=_bind):
    if self.family == _socket.AF_INET and isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
        address = ("{pod_ip}", *address[1:])
    return _bind(self, address)


_socket.socket.bind = _pod_bind
'''
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


class NotYet(Exception):
    """Something a pod needs before its container can start is missing (a kubelet's
    ContainerCreating or CreateContainerConfigError)."""


def _expand(text: str, env: dict[str, str]) -> str:
    """A kubelet's ``$(VAR)`` expansion (``$$`` for a literal ``$``)."""
    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def _field(pod: client.V1Pod, path: str, pod_ip: str) -> str:
    """A downward-API field, as a kubelet fills it in."""
    fields = {"metadata.name": pod.metadata.name, "metadata.namespace": pod.metadata.namespace,
              "metadata.uid": pod.metadata.uid, "spec.serviceAccountName": pod.spec.service_account_name or "default",
              "spec.nodeName": pod.spec.node_name or "", "status.podIP": pod_ip, "status.hostIP": HOST_IP}
    if path in fields:
        return fields[path]
    found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if found:
        return (getattr(pod.metadata, found.group(1)) or {}).get(found.group(2), "")
    raise NotYet(f"downward-API field {path}, which the lab does not fill in")


class Runner:
    def __init__(self, kubeconfig: str, state: Path, logs: Path, publish: Path, *, names: Names | None = None,
                 image_dir: Path | None = None):
        self.names = names or Names()
        self.api = config.new_client_from_config(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        self.server = doc["clusters"][0]["cluster"]["server"]
        self.ca = Path(doc["clusters"][0]["cluster"]["certificate-authority"]).read_text()
        self.state, self.logs, self.publish = state, logs, publish
        self.images = images.images(image_dir) if image_dir else {}
        self.image_dir = image_dir
        self.running: dict[str, Run] = {}  # pod uid -> its container's process
        self.crashed: dict[str, tuple[int, float]] = {}  # pod uid -> (restarts, when to start it again)
        self.finished: set[str] = set()  # pods whose container exited for good (Jobs' pods)
        self.pod_ips: dict[str, str] = {}  # pod uid -> its address, for as long as the pod exists

    # which pods are the runner's

    def workload(self, pod: client.V1Pod) -> Workload | None:
        """The controller or image the runner runs for ``pod``; None: kwok's (see cluster.stages)."""
        labels = pod.metadata.labels or {}
        for controller in CONTROLLERS:
            if labels.get(controller.label) == controller.name:
                return controller
        repositories = {images.repository(c.image or "") for c in pod.spec.containers}
        ours = [self.images[r] for r in repositories if r in self.images]
        return ours[0] if ours else None

    # what a kubelet resolves before it starts a container

    def _secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        secret = _or_none(self.core.read_namespaced_secret, name, namespace)
        return None if secret is None else {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def _config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        config_map = _or_none(self.core.read_namespaced_config_map, name, namespace)
        return None if config_map is None else {k: v.encode() for k, v in (config_map.data or {}).items()}

    def container_env(self, container: client.V1Container, pod: client.V1Pod, pod_ip: str) -> dict[str, str]:
        """The container's ``env``: values (``$(VAR)`` expanded), Secret and ConfigMap keys and
        downward-API fields. Raises :class:`NotYet` while a key it needs is missing."""
        env: dict[str, str] = {}
        for var in container.env or []:
            source = var.value_from
            if source is None:  # an empty value is left out of the API's answer: set, and empty
                env[var.name] = _expand(var.value or "", env)
            elif source.field_ref:
                env[var.name] = _field(pod, source.field_ref.field_path, pod_ip)
            elif source.secret_key_ref or source.config_map_key_ref:
                ref = source.secret_key_ref or source.config_map_key_ref
                kind = "Secret" if source.secret_key_ref else "ConfigMap"
                data = (self._secret if source.secret_key_ref else self._config_map)(pod.metadata.namespace, ref.name)
                if data is not None and ref.key in data:
                    env[var.name] = data[ref.key].decode()
                elif not ref.optional:
                    raise NotYet(f"{kind} {ref.name} key {ref.key} (for {var.name})")
        return env

    def volumes(self, pod: client.V1Pod, container: client.V1Container, folder: Path) -> dict[str, Volume]:
        """The container's volumes as folders here (by mountPath), filled as a kubelet fills them: a
        Secret's or ConfigMap's keys as files (mode 0644 unless the volume says otherwise), an
        emptyDir empty. Raises :class:`NotYet` while a Secret or ConfigMap the pod needs is missing."""
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
                if volume.secret:
                    data = self._secret(pod.metadata.namespace, volume.secret.secret_name)
                else:
                    data = self._config_map(pod.metadata.namespace, volume.config_map.name)
                if data is None and not source.optional:
                    raise NotYet(f"{'Secret' if volume.secret else 'ConfigMap'} for volume {mount.name}")
                items = {i.key: (i.path, i.mode) for i in source.items or []} or {k: (k, None) for k in data or {}}
                for key, (path, mode) in items.items():
                    if data and key in data:
                        (target / path).parent.mkdir(parents=True, exist_ok=True)
                        (target / path).write_bytes(data[key])
                        (target / path).chmod(mode or source.default_mode or 0o644)
            elif volume.empty_dir is None:
                continue  # a kind of volume none of the lab's pods uses
            # a Secret or ConfigMap is always mounted read-only, as a kubelet mounts it
            mounts[mount.mount_path] = Volume(target, read_only=bool(mount.read_only) or source is not None)
        return mounts

    # starting, watching and stopping a pod's container

    def start(self, workload: Workload, pod: client.V1Pod, restarts: int = 0) -> Run:
        is_image = isinstance(workload, images.Image)
        if is_image and (len(pod.spec.containers) != 1 or pod.spec.init_containers):
            raise NotYet("one container and no init container (the lab runs no more)")
        container = pod.spec.containers[0]
        namespace, account = pod.metadata.namespace, pod.spec.service_account_name or "default"
        pod_ip = HOST_IP
        if is_image:  # a pod's address is its own for its lifetime: a restarted container keeps it
            pod_ip = self.pod_ips.get(pod.metadata.uid) or self._pod_ip(container)
            self.pod_ips[pod.metadata.uid] = pod_ip
        folder = Path(tempfile.mkdtemp(prefix=f"{pod.metadata.name[:40]}-", dir=self.state.parent))
        try:
            mounts = self.volumes(pod, container, folder)
            env = self.container_env(container, pod, pod_ip)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        token = self.core.create_namespaced_service_account_token(account, namespace, {"spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                               "uid": pod.metadata.uid}}}).status.token
        self.names.changed(now=True)  # a container started right after its database was made finds it
        files = (("token", token), ("ca.crt", self.ca), ("namespace", namespace), ("resolv.conf", RESOLV_CONF),
                 ("hosts", self.names.hosts()))
        for name, value in files:
            (folder / name).write_text(value)
            (folder / name).chmod(0o644 if name in ("resolv.conf", "hosts") else 0o600)
        # a mount at a folder this machine has is made in the container's mount namespace; one at a
        # path it lacks is given by its folder here, in the arguments (and environment) that name it
        # (seen from inside, the pod's folder is at POD_DIR: a mount on /tmp would hide where it is here)
        inside = {path: f"{POD_DIR}/{volume.folder.relative_to(folder)}" for path, volume in mounts.items()}
        bound = {path: inside[path] for path in mounts if Path(path).is_dir() and path != "/run"}
        unbound = {p: t for p, t in inside.items() if p not in bound}
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        service = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        if is_image:
            argv = self._image_argv(workload, container, env)
            env = {**workload.environment(), "HOSTNAME": pod.metadata.name, **service, **env}
            env = {k: with_volumes([v], unbound)[0] for k, v in env.items()}
            argv = with_volumes(argv, unbound)
            shim = folder / "python"
            shim.mkdir()
            (shim / "sitecustomize.py").write_text(BIND_SHIM.format(pod_ip=pod_ip))
            env["PYTHONPATH"] = ":".join(filter(None, (f"{POD_DIR}/python", env.get("PYTHONPATH"))))
            workdir = with_volumes([container.working_dir or workload.workdir], unbound)[0]
            addresses = {port.name or str(port.container_port): f"{pod_ip}:{port.container_port}"
                         for port in container.ports or []}
        else:
            args = with_volumes(list(container.args or []), unbound)
            args, addresses = host_args(args, workload.listen_flags, workload.port_flags)
            argv = [str(workload.binary), *args]
            env = {"PATH": "/usr/bin:/bin", **env, **service}
            workdir = "/"
        keep = (str(images.ROOT), sys.prefix, str(self.image_dir or images.ROOT),
                str(Path(argv[0]).parent) if argv[0].startswith("/") else sys.prefix)
        script = _mount_script(mounts, inside, bound, workdir, read_only_root=is_image,
                               keep=tuple(dict.fromkeys(keep)))
        log = self.logs / f"{namespace}.{pod.metadata.name}.{container.name}.log"
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(folder),
                                 *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
        write_log(proc, log)
        return Run(uid=pod.metadata.uid, pod=pod, workload=workload, container=container.name, proc=proc,
                   argv=argv, folder=folder, log=log, pod_ip=pod_ip, addresses=addresses, restarts=restarts,
                   started_at=_now(), hosts_version=self.names.version)

    def _image_argv(self, image: images.Image, container: client.V1Container, env: dict[str, str]) -> list[str]:
        """The command a container runtime runs: ``command`` replaces the image's ENTRYPOINT (and
        drops its CMD), ``args`` replace its CMD; ``$(VAR)`` expanded from the container's env."""
        command = list(container.command) if container.command else list(image.entrypoint)
        # (the API leaves out empty lists: no args is None)
        args = list(container.args or ([] if container.command else image.cmd))
        argv = [_expand(a, env) for a in command + args]
        if not argv or (not container.command and not image.entrypoint):
            raise NotYet(f"a command: the lab's {image.repository} image ({image.stands_for}) has no entrypoint "
                         "it can run, so the container must name its command")
        return argv

    def _pod_ip(self, container: client.V1Container) -> str:
        """An address of :data:`POD_NETWORK` where every port the container declares is free here."""
        import secrets

        network = ipaddress.ip_network(POD_NETWORK)
        ports = [p.container_port for p in container.ports or []] or [0]
        for _ in range(200):
            address = str(network[1 + secrets.randbelow(network.num_addresses - 2)])
            if address in self.pod_ips.values():
                continue
            try:
                for port in ports:
                    with socket.socket() as probe:
                        probe.bind((address, port))
            except OSError:
                continue
            return address
        raise NotYet(f"a free address in {POD_NETWORK}")

    def report(self, run: Run, phase: str = "Running", exit_code: int | None = None) -> None:
        """The pod's status as a kubelet reports it: Running, Ready as the probe says, or the exit
        code of a container that will not run again (Succeeded or Failed)."""
        now = _now()
        flag = "True" if run.ready and phase == "Running" else "False"
        if exit_code is not None:
            state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                    "startedAt": run.started_at, "finishedAt": now}}
        elif run.waiting:
            state = {"waiting": {"reason": run.waiting}}
        else:
            state = {"running": {"startedAt": run.started_at}}
        container = next(c for c in run.pod.spec.containers if c.name == run.container)
        status = {
            "phase": phase, "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}], "podIP": run.pod_ip,
            "podIPs": [{"ip": run.pod_ip}], "startTime": run.pod.status.start_time or run.started_at,
            "conditions": [{"type": kind, "status": flag if kind in ("Ready", "ContainersReady") else "True",
                            "lastTransitionTime": now}
                           for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{
                "name": container.name, "image": container.image, "imageID": "",
                "containerID": f"lab://{run.proc.pid}", "ready": flag == "True", "started": exit_code is None,
                "restartCount": run.restarts, "state": state,
                **({"lastState": {"terminated": run.last_exit}} if run.last_exit else {})}],
        }
        self.core.patch_namespaced_pod_status(run.pod.metadata.name, run.pod.metadata.namespace, {"status": status})

    def probe(self, run: Run) -> None:
        """Readiness and liveness, as a kubelet probes: a controller once it answers its health
        URL; a container of ours by its pod's own httpGet probes, at the pod's address."""
        now = time.monotonic()
        if isinstance(run.workload, HostController):
            if not run.ready and self._controller_ready(run):
                run.ready = True
                self.report(run)
            return
        container = next(c for c in run.pod.spec.containers if c.name == run.container)
        if run.kill_at is not None:  # being stopped
            return
        if container.readiness_probe is None and not run.ready:  # no probe: Ready once started
            run.ready = True
            self.report(run)
        for kind, spec in (("readiness", container.readiness_probe), ("liveness", container.liveness_probe)):
            if spec is None:
                continue
            due = run.probes.setdefault(kind, run.started + (spec.initial_delay_seconds or 0))
            if now < due:
                continue
            run.probes[kind] = now + (spec.period_seconds or 10)
            ok = self._http_probe(run, spec)
            failures = run.failures[kind] = 0 if ok else run.failures.get(kind, 0) + 1
            threshold = spec.failure_threshold or 3
            if kind == "readiness":
                ready = ok or (run.ready and failures < threshold)
                if ready != run.ready:
                    run.ready = ready
                    self.report(run)
            elif failures >= threshold:
                print(f"runner: {run.name} failed its liveness probe {failures} times: restarting it", flush=True)
                self.signal(run, grace=run.pod.spec.termination_grace_period_seconds)

    def _http_probe(self, run: Run, spec: client.V1Probe) -> bool:
        get = spec.http_get
        if get is None:  # exec and tcpSocket probes: none of the lab's pods has one
            return True
        port = get.port
        if isinstance(port, str) and not port.isdigit():
            container = next(c for c in run.pod.spec.containers if c.name == run.container)
            port = next((p.container_port for p in container.ports or [] if p.name == port), None)
            if port is None:
                return False
        url = f"{(get.scheme or 'HTTP').lower()}://{get.host or run.pod_ip}:{port}{get.path or '/'}"
        return probe_ok(url, spec.timeout_seconds or 1)

    def _controller_ready(self, run: Run) -> bool:
        controller = run.workload
        url = controller.ready.format_map(flag_values(run.argv))
        if fetch(url) is None:
            return False
        if controller.publish_path:
            body = fetch(urllib.parse.urljoin(url, controller.publish_path))
            if body is None:
                return False
            target = self.publish / run.namespace / f"{controller.name}-{Path(controller.publish_path).name}"
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(body)
            tmp.replace(target)
            run.published = str(target)
        return True

    def serve_log(self, run: Run) -> None:
        """Have kwok serve the container's log file (``kubectl logs``), as a kubelet serves the log
        the container runtime keeps: a kwok ``Logs`` object for the pod, owned by it (so it goes
        with the pod); and, for a pod with an address of its own, ``kubectl port-forward`` to its
        container ports there (a kwok ``PortForward`` object)."""
        pod = run.pod
        body = {"apiVersion": f"{LOGS_GROUP}/v1alpha1", "kind": "Logs",
                "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                                  "uid": pod.metadata.uid}]},
                "spec": {"logs": [{"containers": [run.container], "logsFile": str(run.log)}]}}
        custom = client.CustomObjectsApi(self.api)
        documents = [("logs", body)]
        ports = [p.container_port for c in pod.spec.containers for p in c.ports or []]
        if ports and run.pod_ip != HOST_IP:  # kubectl port-forward to the pod: to its address here
            documents.append(("portforwards", {**body, "kind": "PortForward", "spec": {"forwards": [
                {"ports": [port], "target": {"port": port, "address": run.pod_ip}} for port in ports]}}))
        for plural, document in documents:
            try:
                custom.create_namespaced_custom_object(LOGS_GROUP, "v1alpha1", pod.metadata.namespace, plural,
                                                       document)
            except ApiException as e:
                if e.status != 409:  # a restart: the same file, already served
                    raise
        run.log_served = True

    def signal(self, run: Run, grace: int | None) -> None:
        """SIGTERM now, SIGKILL once ``grace`` seconds have passed (see :meth:`tend`)."""
        if run.kill_at is None:
            with contextlib.suppress(ProcessLookupError):
                run.proc.terminate()
            run.kill_at = time.monotonic() + (30 if grace is None else grace)

    def clean(self, run: Run) -> None:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        shutil.rmtree(run.folder, ignore_errors=True)

    def tend(self, uid: str, workload: Workload, pod: client.V1Pod) -> None:
        """One pod, as a kubelet tends it: started; restarted with a back-off if it exited and its
        restart policy says so, else its exit code reported; its log served; probed."""
        run = self.running.get(uid)
        if run is not None:
            run.pod = pod
            if run.kill_at is not None and time.monotonic() >= run.kill_at and run.proc.poll() is None:
                run.proc.kill()
            code = run.proc.poll()
            if code is not None:
                self._exited(run, 128 - code if code < 0 else code)  # killed by signal N: 128 + N
                return
        restarts, not_before = self.crashed.get(uid, (0, 0.0))
        if run is None and (uid in self.finished or time.monotonic() < not_before):
            return
        try:
            if run is None:
                run = self.running[uid] = self.start(workload, pod, restarts)
                self.report(run)
            self.probe(run)
        except NotYet as e:  # as a kubelet leaves a pod ContainerCreating
            print(f"runner: {pod.metadata.namespace}/{pod.metadata.name} waits for its {e}", file=sys.stderr,
                  flush=True)
            return
        except ApiException as e:
            print(f"runner: {pod.metadata.namespace}/{pod.metadata.name}: {e.reason}", file=sys.stderr, flush=True)
            return
        self._serve_log(run)

    def _serve_log(self, run: Run) -> None:
        if not run.log_served:  # kwok's Logs kind may not be there yet at start: tried again
            try:
                self.serve_log(run)
            except ApiException as e:
                print(f"runner: {run.name}: the log is not served yet: {e.reason}", file=sys.stderr, flush=True)

    def _exited(self, run: Run, code: int) -> None:
        """The container exited: started again (``Always``; ``OnFailure`` after a failure) with a
        CrashLoopBackOff-like delay, or its exit code reported, which ends the pod (a Job's)."""
        self.running.pop(run.uid)
        self.clean(run)
        policy = run.pod.spec.restart_policy or "Always"
        print(f"runner: {run.name} exited ({code})", flush=True)
        if not run.deleted and (policy == "Always" or (policy == "OnFailure" and code != 0)):
            restarts = run.restarts + 1
            delay = min(BACKOFF_FIRST * 2 ** (restarts - 1), BACKOFF_MAX)  # kubelet's CrashLoopBackOff
            self.crashed[run.uid] = (restarts, time.monotonic() + delay)
            run.ready, run.waiting = False, "CrashLoopBackOff"
            run.last_exit = {"exitCode": code, "reason": "Error" if code else "Completed",
                             "startedAt": run.started_at, "finishedAt": _now()}
            with contextlib.suppress(ApiException):
                self.report(run)
            return
        if not run.deleted:
            self.finished.add(run.uid)
            self._serve_log(run)
            run.ready = False
            self.report(run, "Succeeded" if code == 0 else "Failed", exit_code=code)

    def terminate(self, uid: str, pod: client.V1Pod) -> None:
        """A pod being deleted: SIGTERM to its container, SIGKILL after the grace period the deletion
        gave, and only once the process is gone is the pod object removed (kwok leaves it)."""
        run = self.running.get(uid)
        if run is not None and run.proc.poll() is None:
            run.pod = pod
            if not run.deleted:
                print(f"runner: {run.name} is deleted: SIGTERM", flush=True)
                run.deleted = True
                run.kill_at = None  # a liveness restart under way: the deletion's grace period now
                self.signal(run, pod.metadata.deletion_grace_period_seconds)
                run.ready = False
                with contextlib.suppress(ApiException):
                    self.report(run)
            elif time.monotonic() >= run.kill_at:
                print(f"runner: {run.name} outlived its grace period: SIGKILL", flush=True)
                run.proc.kill()
            return
        if run is not None:
            self.running.pop(uid)
            self.clean(run)
        self.crashed.pop(uid, None)
        self.finished.discard(uid)
        try:
            # as a kubelet does once the containers are gone (in the body: the API server reads the
            # query's grace period only when the body is empty)
            self.core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions={"uid": uid}))
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def service_names(self) -> dict[str, list[str]]:
        """Each Service's cluster names (``<name>.<namespace>.svc.cluster.local``, ``<name>.<namespace>.svc``)
        -> the addresses of its Ready pods that the runner runs, as the Service's endpoints would
        list them (the Service's port must be its pods' port: the lab has no kube-proxy to map one
        to the other)."""
        names: dict[str, list[str]] = {}
        ready = [run for run in self.running.values() if run.ready and run.kill_at is None
                 and run.pod_ip != HOST_IP]
        if not ready:
            return names
        for service in self.core.list_service_for_all_namespaces().items:
            selector = service.spec.selector or {}
            if not selector:
                continue
            ips = sorted(run.pod_ip for run in ready if run.namespace == service.metadata.namespace
                         and selector.items() <= (run.pod.metadata.labels or {}).items())
            if ips:
                base = f"{service.metadata.name}.{service.metadata.namespace}.svc"
                names[f"{base}.cluster.local {base}"] = ips
        return names

    def write_state(self) -> None:
        # controllers by <namespace>/<controller>: a second release of a chart runs a second
        # controller; the pods of the lab's images under "pods", by <namespace>/<pod>
        doc: dict = {"pods": {}}
        for run in self.running.values():
            if run.proc.poll() is not None:
                continue
            entry = {"pod": f"{run.namespace}/{run.pod.metadata.name}", "pid": run.proc.pid,
                     "addresses": run.addresses, "pod_ip": run.pod_ip, "log": str(run.log), "ready": run.ready}
            if isinstance(run.workload, HostController):
                entry["ready_url"] = run.workload.ready.format_map(flag_values(run.argv))
                entry["published"] = run.published
                doc[f"{run.namespace}/{run.workload.name}"] = entry
            else:
                doc["pods"][entry["pod"]] = {**entry, "image": run.workload.repository}
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.state)

    def reconcile(self) -> None:
        try:
            pods = self.core.list_pod_for_all_namespaces().items
        except (ApiException, OSError) as e:  # the API server restarting, or going away at lab down
            print(f"runner: cannot list pods: {e}", file=sys.stderr, flush=True)
            return
        try:  # names first: a pod started in this round sees them
            self.names.changed(self.service_names())
        except (ApiException, OSError) as e:
            print(f"runner: cannot list the Services: {e}", file=sys.stderr, flush=True)
        seen = set()
        for pod in pods:
            workload = self.workload(pod)
            if workload is None or not pod.spec.node_name:
                continue
            uid = pod.metadata.uid
            seen.add(uid)
            try:
                if pod.metadata.deletion_timestamp is not None:
                    self.terminate(uid, pod)
                elif pod.status.phase in ("Pending", "Running"):
                    self.tend(uid, workload, pod)
            except Exception:  # one pod's trouble is not the others'
                traceback.print_exc()
        for uid in [u for u in self.running if u not in seen]:  # gone without a grace period
            self.clean(self.running.pop(uid))
        self.crashed = {u: v for u, v in self.crashed.items() if u in seen}
        self.finished &= seen
        self.pod_ips = {u: ip for u, ip in self.pod_ips.items() if u in seen}
        for run in self.running.values():  # a database or a Ready pod since: every process sees it
            if run.hosts_version != self.names.version:
                refresh(run.folder / "hosts", self.names.hosts())
                run.hosts_version = self.names.version
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
            self.stop_all()

    def stop_all(self, grace: float = 5.0) -> None:
        """At lab down: SIGTERM to every container, SIGKILL to what outlives ``grace`` seconds."""
        for run in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                run.proc.terminate()
        deadline = time.monotonic() + grace
        for run in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(max(0.0, deadline - time.monotonic()))
            self.clean(run)
        self.running.clear()
        with contextlib.suppress(OSError):
            self.write_state()


@dataclass(frozen=True)
class Volume:
    folder: Path
    read_only: bool


@dataclass(eq=False)
class Run:
    """A pod's container as the runner runs it."""

    uid: str
    pod: client.V1Pod
    workload: Workload
    container: str
    proc: subprocess.Popen
    argv: list[str]
    folder: Path
    log: Path
    pod_ip: str
    addresses: dict[str, str]
    restarts: int
    started_at: str
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    waiting: str | None = None  # a waiting state's reason (CrashLoopBackOff)
    last_exit: dict | None = None
    kill_at: float | None = None  # being stopped: when SIGKILL follows the SIGTERM
    deleted: bool = False  # stopped because its pod is being deleted
    hosts_version: int = 0  # of the names in its hosts file
    probes: dict[str, float] = field(default_factory=dict)  # probe -> when it is next due
    failures: dict[str, int] = field(default_factory=dict)
    log_served: bool = False
    published: str | None = None

    @property
    def namespace(self) -> str:
        return self.pod.metadata.namespace

    @property
    def name(self) -> str:
        return f"{self.pod.metadata.namespace}/{self.pod.metadata.name}"


Workload = HostController | images.Image


def _mount_script(mounts: dict[str, Volume], inside: dict[str, str], bound: set[str] | dict, workdir: str,
                  *, read_only_root: bool = False, keep: tuple[str, ...] = ()) -> str:
    """The shell script that makes the container's mount namespace, then runs its command: the
    pod's service-account folder, resolv.conf and hosts file, and its volumes (``inside``: each
    volume's folder as seen from inside; those in ``bound`` are mounted at their own mount path), a
    read-only volume read-only wherever the container sees it; with ``read_only_root``, this
    machine's root filesystem read-only to it (there is no container layer to write to: what it
    writes goes to its volumes). ``$0`` is the pod's folder here.

    ``keep``: this machine's folders the container's process is made of (the venv, the checkout, the
    images' folder, a controller's binary): a volume mounted over one of their parents (an emptyDir
    at /tmp, with a checkout under /tmp) would hide them, so they are mounted again where they were."""
    mounting, saving = [], []
    for i, folder in enumerate(keep):
        saving.append(f"mkdir -p /run/lab-keep/{i} && mount --bind {shlex.quote(folder)} /run/lab-keep/{i}")
    for path, volume in sorted(mounts.items()):
        seen_at = shlex.quote(path if path in bound else inside[path])
        mounting.append(f"mount --bind {shlex.quote(inside[path])} {seen_at}")
        if volume.read_only:
            mounting.append(f"mount -o remount,bind,ro {seen_at}")
        for i, folder in enumerate(keep):
            if path in bound and (folder + "/").startswith(path.rstrip("/") + "/"):
                kept = shlex.quote(folder)
                mounting.append(f"mkdir -p {kept} && mount --bind /run/lab-keep/{i} {kept}")
    return " && ".join((
        f'mount -t tmpfs lab-pod /run && mkdir -p {SA_DIR} {POD_DIR} && mount --bind "$0" {POD_DIR}',
        *saving,
        f'cp "$0"/token "$0"/ca.crt "$0"/namespace {SA_DIR}/',
        'mount --bind "$0"/resolv.conf /etc/resolv.conf && mount --bind "$0"/hosts /etc/hosts',
        *mounting, *(["mount -o remount,bind,ro /"] if read_only_root else []), f'cd {shlex.quote(workdir)}',
        'exec "$@"'))


def _or_none(read, name: str, namespace: str):
    """``read(name, namespace)``, or None if the API answers 404."""
    try:
        return read(name, namespace)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Names:
    """The hosts file of the processes the runner runs, as a cluster's DNS and the VPC's resolver
    would answer them: localhost; each RDS instance's endpoint in the lab's moto, naming the lab's
    PostgreSQL front; and each Service's cluster names, naming its Ready pods of the lab's images
    (:meth:`Runner.service_names`). Nothing else resolves (see :data:`RESOLV_CONF`). ``version``
    counts the changes."""

    REFRESH_SECONDS = 5.0

    def __init__(self, aws_endpoint: str | None = None, db_address: str | None = None):
        self.aws_endpoint, self.db_address = aws_endpoint, db_address
        self.endpoints: tuple[str, ...] = ()
        self.services: dict[str, list[str]] = {}
        self.checked = -self.REFRESH_SECONDS
        self.version = 0

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

    def changed(self, services: dict[str, list[str]] | None = None, *, now: bool = False) -> bool:
        """Take the Services' names (when given) and look at the RDS endpoints again (every few
        seconds, or ``now``); did anything change?"""
        changed = services is not None and services != self.services
        if changed:
            self.services = services
        if now or time.monotonic() - self.checked >= self.REFRESH_SECONDS:
            self.checked = time.monotonic()
            endpoints = self._lookup()
            if endpoints != self.endpoints:
                self.endpoints, changed = endpoints, True
        self.version += changed
        return changed

    def hosts(self) -> str:
        return ("127.0.0.1 localhost\n::1 localhost\n" + "".join(f"{self.db_address} {e}\n" for e in self.endpoints)
                + "".join(f"{ip} {names}\n" for names, ips in sorted(self.services.items()) for ip in ips))


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


# A controller's own serving certificate is not checked by the probe, as a kubelet does not; and no
# proxy from the environment is asked: every address probed is on this machine.
_PROBE_TLS = ssl.create_default_context()
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_PROBE_TLS))


def fetch(url: str, timeout: float = 2) -> bytes | None:
    """The body of a 200 answer from a controller on loopback, or None."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.read() if response.status == 200 else None
    except OSError:
        return None


def probe_ok(url: str, timeout: float = 1) -> bool:
    """A kubelet's httpGet probe: any status from 200 to 399 succeeds."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return 200 <= response.status < 400
    except OSError:  # refused, timed out, or an HTTPError (400 and above)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--logs", required=True, type=Path)
    parser.add_argument("--publish", required=True, type=Path,
                        help="folder for the files the controllers serve (the Sealed Secrets certificate)")
    parser.add_argument("--aws-endpoint", help="the lab's moto, whose RDS endpoints the controllers resolve")
    parser.add_argument("--db-address", help="where those names lead: the lab's PostgreSQL front (lab.pg_front)")
    parser.add_argument("--images", type=Path,
                        help="the folder lab.kube.images.lay_out filled: run the pods of the lab's images too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("runner: needs root for its private mount namespaces (unshare --mount)", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    args.publish.mkdir(parents=True, exist_ok=True)
    Runner(args.kubeconfig, args.state, args.logs, args.publish, names=Names(args.aws_endpoint, args.db_address),
           image_dir=args.images).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
