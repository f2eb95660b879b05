"""Status stand-in: plays the Job and Deployment controllers on the Kubernetes emulator.

Nothing runs pods in the lab, so nothing would ever write a Job's or a Deployment's status, and
every ``wait`` in kubernetes.core would time out. This process does what the controllers' outcome
looks like, through the API's ``/status`` subresource, as a real controller does:

* a Job gets ``Complete`` (or ``Failed``, see below) once it has existed for ``delaySeconds``;
* a Deployment whose status lags its spec becomes available with ``spec.replicas`` ready replicas;
* once a Sealed Secrets controller Deployment exists, SealedSecrets are unsealed into Secrets with the
  controller's key, as the controller does (:mod:`lab.kube.sealed`).

Its behaviour can be changed while it runs, through the ConfigMap ``lab-status-controller`` in
``kube-system`` (all keys optional):

``mode``
    ``auto`` (default): act after the delay; ``manual``: act only when asked (:func:`mark_job`,
    :func:`mark_deployment`, or ``python -m lab mark ...``).
``delaySeconds``
    how long an object waits before it is marked (default: the ``--delay`` it was started with).
``failJobs``
    comma-separated shell patterns of Job names that fail instead of completing.
``keda``
    ``on``: play the KEDA operator too, making each ScaledObject's HPA (:mod:`lab.kube.keda`);
    default off: the lab runs no KEDA controller.

Run as ``python -m lab.kube.status --kubeconfig FILE [--delay SECONDS]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
import traceback
from dataclasses import dataclass

from kubernetes import client, config

from lab.kube.keda import KedaController
from lab.kube.sealed import SealedSecretsController

POLICY_NAMESPACE = "kube-system"
POLICY_NAME = "lab-status-controller"
_T0 = "1970-01-01T00:00:00Z"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Policy:
    mode: str = "auto"
    delay: float = 1.0
    fail_jobs: tuple[str, ...] = ()
    keda: bool = False

    @classmethod
    def read(cls, core: client.CoreV1Api, default_delay: float) -> Policy:
        try:
            data = core.read_namespaced_config_map(POLICY_NAME, POLICY_NAMESPACE).data or {}
        except client.ApiException:
            data = {}
        return cls(mode=data.get("mode", "auto"), delay=float(data.get("delaySeconds", default_delay)),
                   fail_jobs=tuple(p.strip() for p in data.get("failJobs", "").split(",") if p.strip()),
                   keda=data.get("keda", "off").lower() in ("on", "true", "yes"))

    def job_fails(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.fail_jobs)


def list_items(list_call, **kwargs) -> list[dict]:
    """A list call's items as plain dicts. The client's model deserialization costs far more than
    the request, and it ran four times a second over every Job and Deployment of the lab: measured,
    290 ms of CPU a step with 60 of each (a lab that tests have filled), 6 ms with dicts."""
    return json.loads(list_call(_preload_content=False, **kwargs).data)["items"]


def job_finished(job: dict) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def deployment_current(dep: dict) -> bool:
    st = dep.get("status") or {}
    replicas = dep["spec"].get("replicas")
    want = replicas if replicas is not None else 1
    return bool(st) and st.get("observedGeneration") == dep["metadata"].get("generation") and \
        st.get("availableReplicas", 0) == want and st.get("updatedReplicas", 0) == want


def mark_job(batch: client.BatchV1Api, namespace: str, name: str, failed: bool = False) -> None:
    """Write the status the Job controller writes when the Job's pod succeeds (or when the Job runs
    out of retries)."""
    job = batch.read_namespaced_job(name, namespace)
    now = _now()
    start = job.metadata.creation_timestamp.strftime("%Y-%m-%dT%H:%M:%SZ") if job.metadata.creation_timestamp else now
    if failed:
        attempts = (job.spec.backoff_limit if job.spec.backoff_limit is not None else 6) + 1
        status = {"startTime": start, "failed": attempts, "active": 0, "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit", "lastTransitionTime": now,
             "lastProbeTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit", "lastTransitionTime": now,
             "lastProbeTime": now}]}
    else:
        status = {"startTime": start, "completionTime": now, "succeeded": 1, "active": 0, "ready": 0,
                  "conditions": [
                      {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                       "lastTransitionTime": now, "lastProbeTime": now},
                      {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                       "lastTransitionTime": now, "lastProbeTime": now}]}
    batch.patch_namespaced_job_status(name, namespace, {"status": status})
    _job_pod(batch.api_client, job, failed)


def _job_pod(api: client.ApiClient, job, failed: bool) -> None:
    """The finished pod a Job leaves behind, with the Job controller's labels, so that `kubectl logs
    job/NAME` and kubernetes.core.k8s_log find it. Nothing ran, and its log says so."""
    template = api.sanitize_for_serialization(job.spec.template)
    md = job.metadata
    labels = {**(template.get("metadata", {}).get("labels") or {}), "job-name": md.name,
              "batch.kubernetes.io/job-name": md.name, "controller-uid": md.uid}
    outcome = "failed it (failJobs policy)" if failed else "completed it"
    log = f"lab: no container runs in the lab; the status stand-in {outcome}.\n"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": f"{md.name}-lab", "labels": labels, "annotations": {"lab.dbos.dev/log": log},
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": md.name,
                                             "uid": md.uid, "controller": True}]},
           "spec": template.get("spec", {}), "status": {"phase": "Failed" if failed else "Succeeded"}}
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_pod(md.namespace, pod)
    except client.ApiException as e:
        if e.status != 409:
            raise


def mark_deployment(apps: client.AppsV1Api, namespace: str, name: str) -> None:
    """Write the status the Deployment controller writes once every replica is updated and ready."""
    dep = apps.read_namespaced_deployment(name, namespace)
    n = dep.spec.replicas if dep.spec.replicas is not None else 1
    now = _now()
    status = {"observedGeneration": dep.metadata.generation, "replicas": n, "updatedReplicas": n,
              "readyReplicas": n, "availableReplicas": n, "conditions": [
                  {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                   "message": "Deployment has minimum availability.", "lastUpdateTime": now,
                   "lastTransitionTime": now},
                  {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                   "message": f'ReplicaSet "{name}" has successfully progressed.', "lastUpdateTime": now,
                   "lastTransitionTime": now}]}
    if n == 0:  # a Deployment scaled to zero reports no replica fields at all
        status = {k: v for k, v in status.items() if k in ("observedGeneration", "conditions")}
    apps.patch_namespaced_deployment_status(name, namespace, {"status": status})


class StatusController:
    def __init__(self, api: client.ApiClient, default_delay: float):
        self.core, self.batch, self.apps = client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api)
        self.default_delay = default_delay
        self.sealed_secrets = SealedSecretsController(api)
        self.keda = KedaController(api)
        self.first_seen: dict[tuple, float] = {}  # (kind, ns, name, generation) -> when first seen pending

    def _due(self, key: tuple, delay: float) -> bool:
        seen = self.first_seen.setdefault(key, time.monotonic())
        return time.monotonic() - seen >= delay

    def step(self) -> None:
        policy = Policy.read(self.core, self.default_delay)
        if policy.mode != "auto":
            return
        for job in list_items(self.batch.list_job_for_all_namespaces):
            md = job["metadata"]
            if not job_finished(job) and self._due(("Job", md["namespace"], md["name"], md["uid"]), policy.delay):
                mark_job(self.batch, md["namespace"], md["name"], failed=policy.job_fails(md["name"]))
        for dep in list_items(self.apps.list_deployment_for_all_namespaces):
            md = dep["metadata"]
            key = ("Deployment", md["namespace"], md["name"], md["uid"], md.get("generation"))
            if not deployment_current(dep) and self._due(key, policy.delay):
                mark_deployment(self.apps, md["namespace"], md["name"])
        self.sealed_secrets.step()
        self.keda.step(policy.keda)

    def run(self, interval: float = 0.25) -> None:
        while True:
            try:
                self.step()
            except client.ApiException as exc:
                if exc.status != 404:  # 404: deleted between list and patch, nothing to do
                    print("status stand-in:", exc.status, exc.reason, flush=True)
            except Exception:  # a controller keeps running; the log says what went wrong
                traceback.print_exc()
            time.sleep(interval)


def api_client(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--delay", type=float, default=1.0)
    args = parser.parse_args()
    print("status stand-in running, default delay", args.delay, "s", flush=True)
    StatusController(api_client(args.kubeconfig), args.delay).run()


if __name__ == "__main__":
    main()
