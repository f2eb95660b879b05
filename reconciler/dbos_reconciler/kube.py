"""The Kubernetes API as the reconciler uses it, with the standard library: its pod's ServiceAccount
token and the cluster's CA (in-cluster configuration), the namespace's pods, and a Lease.

The ServiceAccount's Role allows no more than this reads and writes: ``get``/``list``/``watch`` on
pods, and ``get``/``update`` on the one Lease (which the app role creates, so the Role needs no
``create``).
"""

from __future__ import annotations

import datetime
import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(RuntimeError):
    """An answer of the API server other than the one asked for; ``status`` is its HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Api:
    """The API server at ``host``:``port``, as the pod's ServiceAccount (its token is read at each
    request: the kubelet replaces it before it expires)."""

    host: str
    port: int
    token_file: Path = SA_DIR / "token"
    ca_file: Path = SA_DIR / "ca.crt"
    timeout: float = 10.0

    @classmethod
    def in_cluster(cls, env: dict[str, str]) -> Api:
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeError(0, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a pod")
        return cls(host=host, port=int(port))

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection(self.host, self.port, context=context, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status >= 300:
            try:
                message = json.loads(payload).get("message", "")
            except ValueError:
                message = payload[:200].decode(errors="replace")
            raise KubeError(response.status, message)
        return json.loads(payload)

    def pods(self, namespace: str) -> dict[str, str]:
        """Every pod of ``namespace``: its name and phase (Terminating pods included: their object
        exists)."""
        pods: dict[str, str] = {}
        token = ""
        while True:
            query = urllib.parse.urlencode({"limit": 500, **({"continue": token} if token else {})})
            page = self.request("GET", f"/api/v1/namespaces/{_segment(namespace)}/pods?{query}")
            for pod in page.get("items", []):
                pods[pod["metadata"]["name"]] = (pod.get("status") or {}).get("phase") or "Pending"
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return pods


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def micro_time(moment: datetime.datetime) -> str:
    """A Kubernetes MicroTime."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_action(spec: dict, identity: str, expired: bool) -> str:
    """What to do with a Lease whose spec is ``spec``: ``renew`` it (ours), ``acquire`` it (free:
    released, or not renewed for its duration), or ``wait`` (another holder's, still fresh)."""
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        return "renew"
    if not holder or expired:
        return "acquire"
    return "wait"


class Lease:
    """Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does it:

    - a holder renews the Lease (``renewTime``) at every pass; a candidate takes it over only when
      it was released, or when its record has not changed for ``leaseDurationSeconds`` as measured
      by the candidate's own clock since it first saw that record (so the clocks of two nodes need
      not agree);
    - every write carries the ``resourceVersion`` it read: of two candidates, one wins, the other
      gets a conflict and stays a candidate;
    - the holder acts only while its last renewal is younger than the duration, less a margin
      (:meth:`holding`), so a holder that stalled acts no more once another may have taken over.
    """

    def __init__(self, api: Api, namespace: str, name: str, identity: str, duration: int, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)):
        self.api, self.namespace, self.name, self.identity, self.duration = api, namespace, name, identity, duration
        self.monotonic, self.now = monotonic, now
        self.observed: tuple | None = None  # the record last seen (holder, resourceVersion), and when first seen
        self.observed_at = 0.0
        self.renewed_at: float | None = None  # when we last wrote the Lease as its holder

    @property
    def path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{_segment(self.namespace)}/leases/{_segment(self.name)}"

    def try_acquire_or_renew(self) -> bool:
        """One round: True when this process holds the Lease afterwards."""
        started = self.monotonic()
        lease = self.api.request("GET", self.path)
        spec = lease.get("spec") or {}
        # any write changes the resourceVersion: a record unchanged since first seen is one nobody renewed
        record = (spec.get("holderIdentity"), lease["metadata"]["resourceVersion"])
        if record != self.observed:
            self.observed, self.observed_at = record, started
        duration = int(spec.get("leaseDurationSeconds") or self.duration)
        action = lease_action(spec, self.identity, started - self.observed_at > duration)
        if action == "wait":
            self.renewed_at = None
            return False
        moment = micro_time(self.now())
        new_spec = {**spec, "holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                    "renewTime": moment}
        if action == "acquire":
            new_spec["acquireTime"] = moment
            taken_over = 1 if spec.get("holderIdentity") else 0
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + taken_over
        # the object as read (its labels, and the resourceVersion that makes the write conditional), with
        # the new spec: an update replaces the whole object
        body = {**lease, "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": new_spec}
        try:
            written = self.api.request("PUT", self.path, body)
        except KubeError as exc:
            if exc.status == 409:  # another candidate wrote first
                self.renewed_at = None
                return False
            raise
        self.observed = (self.identity, written["metadata"]["resourceVersion"])
        self.observed_at = self.renewed_at = started
        return True

    def holding(self, margin: float = 2.0) -> bool:
        """Whether the last renewal is recent enough to act on."""
        return self.renewed_at is not None and self.monotonic() - self.renewed_at < self.duration - margin

    def release(self) -> None:
        """Give the Lease up (on SIGTERM), so that the next holder need not wait for it to expire."""
        if self.renewed_at is None:
            return
        lease = self.api.request("GET", self.path)
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.identity:
            return
        body = {**lease, "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "spec": {key: value for key, value in spec.items() if key != "holderIdentity"}}
        self.api.request("PUT", self.path, body)
        self.renewed_at = None
