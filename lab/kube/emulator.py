"""Kubernetes stand-in: kmock 0.8's KubernetesEmulator, made faithful enough for kubernetes.core,
kubectl and helm 3.

Run as ``python -m lab.kube.emulator --port PORT --crd-dir DIR``.

kmock keeps objects in memory and serves list/watch/get/create/patch/delete. What a real API server
does beyond that, and what the clients rely on, is added here; each shim names the behaviour it
restores. It uses kmock internals, hence the exact pin ``kmock==0.8``.

It runs no pods and no controllers: no defaulting, admission, garbage collection or RBAC. Status is
written by :mod:`lab.kube.status`, the test-side controller stand-in.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import datetime
import re
import uuid
from pathlib import Path

import aiohttp.web
import kmock
import yaml
from kmock._internal import parsing

from lab.kube import SYSTEM_NAMESPACES, protobuf

KUBERNETES_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
VERBS = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
CRD_RESOURCE = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
SERVICES = kmock.resource("", "v1", "services")
SECRETS = kmock.resource("", "v1", "secrets")
# /api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH
_SERVICE_PROXY = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?$")
SEALED_SECRETS_KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
PODS = kmock.resource("", "v1", "pods")
_POD_LOG = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
# No container runs here: a pod's log is what the status stand-in wrote in this annotation.
POD_LOG_ANNOTATION = "lab.dbos.dev/log"


def _fast_request_routing() -> None:
    """To route a request, kmock asks each reaction whether the request is in its view, and answers by
    iterating the whole request history through the view's filters: every request costs time in
    proportion to all requests served before it (measured: 280 ms per list, and half a core busy,
    after minutes of the status stand-in's polling). For the views the emulator uses (filters and
    priorities over the root), membership of the newest request is decidable directly: it matches
    the filter's criteria and is in the source; the root looks at its most recent requests first.
    Views whose answer depends on history (slices, groups) keep kmock's own check."""
    from kmock._internal import dsl, rendering

    def root_contains(self, item):
        if isinstance(item, rendering.Request):
            return any(r is item for r in reversed(self._requests))
        return dsl.View.__contains__(self, item)

    def filter_contains(self, item):
        if isinstance(item, rendering.Request):
            return bool(self.criteria(item)) and item in self._source
        return dsl.View.__contains__(self, item)

    def chained_contains(self, item):
        if isinstance(item, rendering.Request):
            return item in self._source
        return dsl.View.__contains__(self, item)

    dsl.Root.__contains__ = root_contains
    dsl.Filter.__contains__ = filter_contains
    dsl.Priority.__contains__ = chained_contains


def _fix_namespace_paths() -> None:
    """kmock 0.8 mis-parses /api/v1/namespaces[/NAME[/status|/finalize]] (a crash, or the name taken
    for a namespace). Parse those paths as the cluster-scoped resource they are."""
    original = parsing.parse_path

    def parse_path(path):
        p = path.strip("/").split("/")
        if p[:3] == ["api", "v1", "namespaces"] and (len(p) <= 4 or p[4] in ("status", "finalize")):
            name = p[3] if len(p) > 3 else None
            sub = p[4] if len(p) > 4 else None
            return parsing.ParsedPath("", "v1", "namespaces", None, name, sub)
        return original(path)

    parsing.parse_path = parse_path


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- label and field selectors (kmock ignores both) -------------------------------------------

_SET_EXPR = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on the commas that separate requirements, not those inside ``in (a,b)``."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in (*parts, cur) if p.strip()]


def label_selector_matches(selector: str, labels: dict) -> bool:
    """Kubernetes label selector semantics: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``,
    ``a in (x,y)``, ``a notin (x,y)``."""
    for req in _split_selector(selector):
        m = _SET_EXPR.match(req)
        if not m:
            raise ValueError(f"unable to parse requirement: {req!r}")
        neg, key, op, value, set_op, values = m.groups()
        has, cur = key in labels, labels.get(key)
        if set_op:
            options = {v.strip() for v in values.split(",")}
            ok = (has and cur in options) if set_op == "in" else (not has or cur not in options)
        elif op in ("=", "=="):
            ok = has and cur == value
        elif op == "!=":
            ok = not has or cur != value
        else:
            ok = not has if neg else has
        if not ok:
            return False
    return True


def field_selector_matches(selector: str, obj: dict) -> bool:
    for req in _split_selector(selector):
        op = "!=" if "!=" in req else "="
        path, value = (s.strip() for s in req.replace("==", "=").split(op, 1))
        cur = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur) == value) != (op == "="):
            return False
    return True


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server behaviour that kubernetes.core, kubectl and helm need."""

    resource_version = 0
    # kmock keeps every request for test assertions; the lab needs only those in flight.
    REQUEST_HISTORY = 256

    async def __call__(self, raw_request):
        proxied = _SERVICE_PROXY.match(raw_request.path)
        if proxied and raw_request.method == "GET":
            return self._serve_service_proxy(*proxied.groups())
        pod_log = _POD_LOG.match(raw_request.path)
        if pod_log and raw_request.method == "GET":
            return self._serve_pod_log(*pod_log.groups())
        try:
            return await super().__call__(raw_request)
        finally:
            if len(self._requests) > 2 * self.REQUEST_HISTORY:
                del self._requests[:-self.REQUEST_HISTORY]

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        # client-go rejects watch streams served as application/octet-stream (kmock's default).
        (self.fallback ** 1)[kmock.action.WATCH] << kmock.headers({"Content-Type": "application/json"}) \
            << self._serve_watch
        self["get /version"] << KUBERNETES_VERSION  # kmock says 1.26
        # An empty OpenAPI v2 document: kubectl's and helm's client-side validation then finds no schema
        # and skips validation, instead of failing with "failed to download openapi".
        self["get /openapi/v2"] << kmock.headers(
            {"Content-Type": "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"}) << b""

    def _live(self, resource, namespace: str):
        for (res, ns, _), obj in list(self._objects.items()):
            if res == resource and ns == namespace and not obj.deleted:
                yield obj.raw

    def _serve_service_proxy(self, namespace: str, service: str, path: str | None):
        """The API server's service proxy. No pods run here, so the only backend is the one the lab
        stands in for: a Sealed Secrets controller's ``/v1/cert.pem``, which the controller serves
        from its newest active key Secret (what ``kubeseal --fetch-cert`` reads)."""
        parts = service.split(":")
        name = parts[1] if len(parts) == 3 else parts[0]
        if not any(s["metadata"]["name"] == name for s in self._live(SERVICES, namespace)):
            return _status_response(404, "NotFound", f'services "{name}" not found')
        keys = sorted((s for s in self._live(SECRETS, namespace)
                       if (s["metadata"].get("labels") or {}).get(SEALED_SECRETS_KEY_LABEL) == "active"),
                      key=lambda s: s["metadata"]["creationTimestamp"])
        if path != "/v1/cert.pem" or not keys:
            return _status_response(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
        return aiohttp.web.Response(body=base64.b64decode(keys[-1]["data"]["tls.crt"]), content_type="text/plain")

    def _serve_pod_log(self, namespace: str, name: str):
        for pod in self._live(PODS, namespace):
            if pod["metadata"]["name"] == name:
                text = (pod["metadata"].get("annotations") or {}).get(POD_LOG_ANNOTATION, "")
                return aiohttp.web.Response(text=text, content_type="text/plain")
        return _status_response(404, "NotFound", f'pods "{name}" not found')

    # What a real API server adds to every write: kind and apiVersion, uid, creationTimestamp,
    # resourceVersion (unchanged by a no-op write), generation (bumped when spec changes), the namespace
    # from the URL, and Secret.stringData folded into data.
    def _stamp(self, req, obj: dict, old: dict | None = None) -> dict:
        self.resource_version += 1
        # a stored object always has its kind and apiVersion, even if the client sent neither
        obj.setdefault("apiVersion", f"{req.resource.group}/{req.resource.version}".lstrip("/"))
        if self._resources[req.resource].kind:
            obj.setdefault("kind", self._resources[req.resource].kind)
        md = obj.setdefault("metadata", {})
        base = (old or {}).get("metadata", {})
        md.setdefault("uid", base.get("uid") or str(uuid.uuid4()))
        md.setdefault("creationTimestamp", base.get("creationTimestamp") or _now())
        md["resourceVersion"] = str(self.resource_version)
        if old is not None and _without_versions(obj) == _without_versions(old):
            md["resourceVersion"] = base["resourceVersion"]
        generation = base.get("generation", 0)
        spec_changed = old is None or (obj.get("spec") and obj.get("spec") != old.get("spec"))
        md["generation"] = generation + 1 if spec_changed else generation
        if req.namespace and req.resource.plural != "namespaces":
            md["namespace"] = req.namespace
        if obj.get("kind") == "Secret" and obj.get("stringData"):
            data = obj.setdefault("data", {}) or {}
            data.update({k: base64.b64encode(v.encode()).decode() for k, v in obj.pop("stringData").items()})
            obj["data"] = data
        if req.resource.plural == "namespaces":
            obj.setdefault("status", {"phase": "Active"})
        elif old is None and "status" in self.resources[req.resource].subresources:
            obj.setdefault("status", {})  # what a new object with a status subresource shows
        return obj

    async def _handle(self, req):
        if req.resource is None or not isinstance(req.data, dict):
            return await super()._handle(req)
        key = (req.resource, req.namespace, req.name)
        cur = None
        if req.name and key in self._objects and not self._objects[key].deleted:
            cur = self._objects[key].raw
        if req.method in ("PUT", "PATCH") and req.subresource == "status" and cur:
            req.data.pop("metadata", None)  # a status write must not clobber metadata

        if req.method == "PUT" or (req.method == "PATCH" and "apply-patch" in req.headers.get("Content-Type", "")):
            return await self._replace(req, key, cur)
        if req.action == kmock.action.CREATE:
            early = self._before_create(req)
        elif req.action == kmock.action.UPDATE and cur:
            early = self._before_patch(req, cur)
        else:
            early = aiohttp.web.json_response(cur or {}) if req.action == kmock.action.DELETE and _dry(req) else None
        if early is not None:  # a dry run: answer without storing
            return early

        resp = await super()._handle(req)
        if req.action == kmock.action.DELETE and req.resource == NAMESPACES:
            self._delete_namespaced_objects(req.name)
        return resp

    async def _replace(self, req, key, cur):
        """PUT (replace) and server-side apply, neither of which kmock has."""
        if req.method == "PUT" and not cur:
            raise kmock.KubernetesObjectNotFoundError()
        if req.method == "PATCH" and cur:
            merged = kmock.Object(copy.deepcopy(cur))
            merged.patch(req.data)
            new = dict(merged.raw)
        else:
            new = copy.deepcopy(req.data)
        new = self._stamp(req, new, cur)
        if _dry(req):
            return aiohttp.web.json_response(new)
        self._on_write(req, new)
        async with self._lock:
            if key in self._objects:
                self._objects[key].create(new)
            else:
                self._objects[key] = new
            await self._buses[req.resource].put({"type": "MODIFIED" if cur else "ADDED", "object": new})
        return aiohttp.web.json_response(new, status=200 if cur else 201)

    def _before_create(self, req):
        if req.resource not in self.resources:  # kmock would accept and auto-discover unknown kinds
            raise kmock.KubernetesResourceNotFoundError()
        ns_key = (NAMESPACES, None, req.namespace)
        if req.namespace and (ns_key not in self._objects or self._objects[ns_key].deleted):
            raise kmock.KubernetesNotFoundError(message=f'namespaces "{req.namespace}" not found')
        name = (req.data.get("metadata") or {}).get("name")
        key = (req.resource, req.namespace, name)
        if name and key in self._objects and not self._objects[key].deleted:
            # reason AlreadyExists, which clients test for (helm's --create-namespace, for one)
            return _status_response(409, "AlreadyExists", f'{req.resource.plural} "{name}" already exists')
        self._stamp(req, req.data)
        if _dry(req):
            return aiohttp.web.json_response(dict(req.data), status=201)
        self._on_write(req, req.data)
        return None

    def _before_patch(self, req, cur: dict):
        """Merge or strategic-merge patch: kmock applies it; the result is computed here first to
        stamp resourceVersion and generation into the patch."""
        preview = kmock.Object(copy.deepcopy(cur))
        preview.patch(copy.deepcopy(req.data))
        stamped = self._stamp(req, dict(preview.raw), cur)
        req.data.setdefault("metadata", {}).update(
            {k: stamped["metadata"][k] for k in ("resourceVersion", "generation")})
        if "data" in stamped and req.data.get("stringData"):
            req.data["data"], req.data["stringData"] = stamped["data"], None
        if _dry(req):
            return aiohttp.web.json_response(stamped)
        self._on_write(req, stamped)
        return None

    def _on_write(self, req, obj: dict) -> None:
        if req.resource == CRD_RESOURCE:
            self.register_crd(obj)

    def _delete_namespaced_objects(self, namespace: str) -> None:
        """Deleting a namespace deletes what is in it (the namespace controller's job)."""
        for (_, ns, _), obj in list(self._objects.items()):
            if ns == namespace and not obj.deleted:
                obj.delete()

    def register_crd(self, crd: dict) -> None:
        """A created CRD makes its kind servable and discoverable, and is Established at once (helm
        waits for that condition after installing CRDs)."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True) and names.get("plural"):
                self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = dict(
                    kind=names.get("kind"), singular=names.get("singular") or names["plural"],
                    namespaced=spec.get("scope") != "Cluster", verbs=VERBS,
                    shortnames=set(names.get("shortNames") or []),
                    categories=set(names.get("categories") or []),
                    subresources=set((version.get("subresources") or {}).keys()))
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": _now()}
                           for t in ("NamesAccepted", "Established")],
        }

    def preload(self, resource, obj: dict) -> None:
        """Store a cluster-scoped object before serving, as if it had always been there."""
        self.resource_version += 1
        obj.setdefault("metadata", {}).update(
            uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=str(self.resource_version),
            generation=1)
        if resource == CRD_RESOURCE:
            self.register_crd(obj)
        if resource == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        self._objects[(resource, None, obj["metadata"]["name"])] = obj

    async def _serve_version(self, req):
        doc = await super()._serve_version(req)
        doc["groupVersion"] = doc["groupVersion"].lstrip("/")  # kmock serves "/v1" for the core group
        for r in doc["resources"]:
            # kmock repeats short names on subresources, which makes kubectl's "ns"/"svc" ambiguous
            if "/" in r["name"]:
                r["shortNames"] = r["categories"] = []
        return doc

    async def _serve_list(self, req):
        res = await super()._serve_list(req)
        labels = req.params.get("labelSelector", "")
        fields = req.params.get("fieldSelector", "")
        items = [o for o in res["items"]
                 if label_selector_matches(labels, (o.get("metadata") or {}).get("labels") or {})
                 and field_selector_matches(fields, o)]
        kind = self._resources[req.resource].kind or ""
        # a real list carries kind and apiVersion; the Python client needs them
        return {"apiVersion": f"{req.resource.group}/{req.resource.version}".lstrip("/"),
                "kind": kind + "List", "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items}


def _status_response(code: int, reason: str, message: str):
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": message, "reason": reason, "code": code}, status=code)


def _dry(req) -> bool:
    return bool(req.params.get("dryRun"))


def _without_versions(obj: dict) -> dict:
    md = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "generation")}
    return {**obj, "metadata": md}


def load_crds(directory: Path) -> list[dict]:
    crds = []
    for path in sorted(directory.glob("*.yaml")):
        crds.extend(d for d in yaml.safe_load_all(path.read_text())
                    if d and d.get("kind") == "CustomResourceDefinition")
    return crds


async def serve(port: int, crd_dir: Path | None) -> None:
    _fix_namespace_paths()
    _fast_request_routing()
    protobuf.install()
    emulator = Emulator()
    emulator.resources.load_bundled()
    for name in SYSTEM_NAMESPACES:
        emulator.preload(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    for crd in load_crds(crd_dir) if crd_dir else []:
        emulator.preload(CRD_RESOURCE, crd)
    async with emulator, kmock.Server(emulator, host="127.0.0.1", port=port) as server:
        print("kubernetes emulator serving at", server.url, flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--crd-dir", type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.crd_dir))


if __name__ == "__main__":
    main()
