"""Validation of manifests.

Offline: built-in kinds against Kubernetes 1.31's schemas (kubernetes-validate, strict: unknown fields
are errors), custom resources against their CRD's openAPIV3Schema (from the Go modules of the KEDA and
Sealed Secrets versions the lab runs), read the way the API server reads it: unknown fields are errors
unless the schema preserves them.

On the API server: :func:`strict_refusals` submits what a run's ``kubernetes.core.k8s`` tasks applied
(``PlaybookResult.applied``, as the roles rendered it) as server-side applies, dry run, with strict field
validation: the roles' applies run under the API's default (``Warn``), which drops an unknown field and
succeeds, so that a stored object read back can no longer show one.
"""

from __future__ import annotations

import copy
import json
from functools import cache

import jsonschema
import kubernetes_validate
import yaml
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from lab.kube.cluster import addon_crd_folders

KUBERNETES_VERSION = "1.31.0"


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


def strict_refusal(api_client, obj: dict, dynamic: DynamicClient | None = None) -> str | None:
    """None when the API server accepts ``obj`` as a server-side apply with strict field validation
    (``dryRun=All``: nothing is changed), else the server's message: an unknown or duplicate field, or
    any other reason the object is refused. (``dynamic``: a DynamicClient of ``api_client`` already made,
    whose discovery of the API's resources is then reused.)"""
    dynamic = dynamic or DynamicClient(api_client)
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    metadata = obj["metadata"]
    path = resource.path(name=metadata["name"], namespace=metadata.get("namespace") if resource.namespaced else None)
    try:
        api_client.call_api(
            path, "PATCH", body=obj, auth_settings=["BearerToken"], _preload_content=False,
            query_params=[("dryRun", "All"), ("fieldValidation", "Strict"), ("fieldManager", "strict-check"),
                          ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"})
    except ApiException as e:
        try:
            return json.loads(e.body)["message"]
        except (TypeError, ValueError, KeyError):
            return f"{e.status} {e.reason}: {e.body}"
    return None


def strict_refusals(api_client, applied: list[tuple[str, dict]]) -> dict[str, str]:
    """``{"<task>: <kind> <name>": message}`` for every object of ``applied`` (a run's
    ``PlaybookResult.applied``) that the API server refuses under strict field validation; empty when it
    accepts them all. Fails when there is nothing to check, which would make the check pass for nothing."""
    assert applied, "the run applied nothing through kubernetes.core.k8s"
    dynamic = DynamicClient(api_client)
    refused = {f"{task}: {obj['kind']} {obj['metadata']['name']}": strict_refusal(api_client, obj, dynamic)
               for task, obj in applied}
    return {name: why for name, why in refused.items() if why}
