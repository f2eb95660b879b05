"""KEDA operator stand-in: what the operator writes when it accepts a ScaledObject.

Off unless the status stand-in's policy says ``keda: "on"`` (the lab runs no KEDA by default, and
the keda role's HPA check is then skipped by a variable). When on, and once a KEDA operator
Deployment (label ``app.kubernetes.io/name=keda-operator``) exists, each ScaledObject gets, as KEDA
2.17 makes them (kedacore/keda: controllers/keda/hpa.go, scaledobject_controller.go):

* the HorizontalPodAutoscaler ``keda-hpa-<name>`` (or ``spec.advanced.horizontalPodAutoscalerConfig.name``),
  owned by the ScaledObject, targeting its ``scaleTargetRef``, with ``minReplicas`` = max(1,
  minReplicaCount), ``maxReplicaCount``, and one External metric per trigger (``s<i>-<type>``) with an
  AverageValue target of the trigger's target value;
* status ``hpaName``, ``scaleTargetKind``, ``originalReplicaCount`` and conditions Ready True, Active
  False, Fallback False.

It computes no metric and scales nothing: no KEDA metrics server runs in the lab.
"""

from __future__ import annotations

import time

from kubernetes import client

GROUP, VERSION, PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
OPERATOR_SELECTOR = "app.kubernetes.io/name=keda-operator"
# The field holding each trigger type's target value (KEDA's scalers); metrics-api and postgresql first.
TARGET_FIELDS = {"metrics-api": "targetValue", "postgresql": "targetQueryValue"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def hpa_for(scaled: dict) -> dict:
    md, spec = scaled["metadata"], scaled["spec"]
    advanced = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
    target = spec["scaleTargetRef"]
    metrics = []
    for index, trigger in enumerate(spec.get("triggers") or []):
        value = (trigger.get("metadata") or {}).get(TARGET_FIELDS.get(trigger["type"], "targetValue"), "1")
        metrics.append({"type": "External", "external": {
            "metric": {"name": trigger.get("name") or f"s{index}-{trigger['type']}",
                       "selector": {"matchLabels": {"scaledobject.keda.sh/name": md["name"]}}},
            "target": {"type": "AverageValue", "averageValue": str(value)}}})
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": advanced.get("name") or f"keda-hpa-{md['name']}", "namespace": md["namespace"],
                     "labels": {"app.kubernetes.io/managed-by": "keda-operator",
                                "app.kubernetes.io/name": advanced.get("name") or f"keda-hpa-{md['name']}",
                                "app.kubernetes.io/part-of": md["name"],
                                "scaledobject.keda.sh/name": md["name"]},
                     "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "ScaledObject",
                                          "name": md["name"], "uid": md["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"scaleTargetRef": {"apiVersion": target.get("apiVersion", "apps/v1"),
                                    "kind": target.get("kind", "Deployment"), "name": target["name"]},
                 "minReplicas": max(1, int(spec.get("minReplicaCount", 0))),
                 "maxReplicas": int(spec.get("maxReplicaCount", 100)),
                 "metrics": metrics},
    }


class KedaController:
    def __init__(self, api: client.ApiClient):
        self.apps = client.AppsV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.done: dict[str, int] = {}  # ScaledObject uid -> generation reconciled

    def step(self, enabled: bool) -> None:
        if not enabled or not self.apps.list_deployment_for_all_namespaces(label_selector=OPERATOR_SELECTOR).items:
            return
        for scaled in self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
            md = scaled["metadata"]
            if self.done.get(md["uid"]) != md.get("generation"):
                # one ScaledObject at a time, as KEDA's reconciler: a failure on one never holds up the
                # others. 404: it, or its namespace, is gone (the emulator collects no garbage, so a
                # ScaledObject can outlive its namespace); there is nothing left to reconcile.
                try:
                    self.reconcile(scaled)
                except client.ApiException as e:
                    if e.status != 404:
                        print(f"keda stand-in: {md['namespace']}/{md['name']}: {e.status} {e.reason}", flush=True)
                        continue
                self.done[md["uid"]] = md.get("generation")

    def reconcile(self, scaled: dict) -> None:
        md = scaled["metadata"]
        hpa = hpa_for(scaled)
        name = hpa["metadata"]["name"]
        try:
            self.autoscaling.create_namespaced_horizontal_pod_autoscaler(md["namespace"], hpa)
        except client.ApiException as e:
            if e.status != 409:
                raise
            self.autoscaling.replace_namespaced_horizontal_pod_autoscaler(name, md["namespace"], hpa)
        target = scaled["spec"]["scaleTargetRef"]
        try:
            current = self.apps.read_namespaced_deployment(target["name"], md["namespace"]).spec.replicas
        except client.ApiException:
            current = None
        now = _now()
        status = {"hpaName": name, "scaleTargetKind": f"{target.get('apiVersion', 'apps/v1')}.Deployment",
                  "scaleTargetGVKR": {"group": "apps", "version": "v1", "kind": "Deployment",
                                      "resource": "deployments"},
                  "conditions": [
                      {"type": "Ready", "status": "True", "reason": "ScaledObjectReady",
                       "message": "ScaledObject is defined correctly and is ready for scaling"},
                      {"type": "Active", "status": "False", "reason": "ScalerNotActive",
                       "message": "Scaling is not performed because triggers are not active"},
                      {"type": "Fallback", "status": "False", "reason": "NoFallbackFound",
                       "message": "No fallbacks are active on this scaled object"}],
                  "lastActiveTime": now}
        if current is not None:
            status["originalReplicaCount"] = current
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, md["namespace"], PLURAL, md["name"],
                                                          {"status": status})
