"""Offline validation of manifests: built-in kinds against Kubernetes 1.31's schemas
(kubernetes-validate, strict: unknown fields are errors), custom resources against their CRD's
openAPIV3Schema (from the Go modules of the KEDA and Sealed Secrets versions the lab runs), read the
way the API server reads it: unknown fields are errors unless the schema preserves them. (The lab's
API server checks the same when the roles apply, with strict field validation; this reads back what
is stored.)"""

from __future__ import annotations

import copy
from functools import cache

import jsonschema
import kubernetes_validate
import yaml

from lab.kube.cluster import addon_crd_folders

KUBERNETES_VERSION = "1.31.0"
# what the API server adds to a stored object: not part of what was rendered
SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


def _jsonschema(schema: dict) -> dict:
    s = copy.deepcopy(schema)
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: _jsonschema(v) for k, v in s["properties"].items()}
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _jsonschema(s["additionalProperties"])
    if "items" in s:
        s["items"] = _jsonschema(s["items"])
    if "properties" in s and "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
        s["additionalProperties"] = False
    return s


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in sorted(p for folder in addon_crd_folders() for p in folder.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                for version in crd["spec"]["versions"]:
                    key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                    schemas[key] = _jsonschema(version["schema"]["openAPIV3Schema"])
    return schemas


def as_rendered(obj: dict) -> dict:
    """An object read back from the API, without what the server added (status, uid, ...)."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    for field in SERVER_FIELDS:
        obj.get("metadata", {}).pop(field, None)
    return obj


def validation_errors(obj: dict) -> list[str]:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crd_schemas():
        return [f"{'.'.join(map(str, e.path))}: {e.message}"
                for e in jsonschema.Draft202012Validator(crd_schemas()[key]).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    return []
