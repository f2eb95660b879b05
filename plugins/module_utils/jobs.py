# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""One-off Kubernetes Jobs: how a Job ended, and running one to its end with its pods' logs.

:func:`job_outcome` is the one reading of a Job's ``status.conditions`` (the module
``dbos.deploy.job_run`` waits on it, the filter ``dbos.deploy.job_outcome`` exposes it to roles).
:func:`run_job` creates a Job, waits for it and reads its logs, through :class:`JobApi` (the
kubernetes client's typed APIs); the rest are the decisions it takes, kept free of the API so that
they are unit-tested on Job and pod objects as the API serves them (camelCase dicts).
"""

from __future__ import annotations

import time

COMPLETE, FAILED = "Complete", "Failed"
# The Job's pods go before the Job does: a replaced Job's run is over, not still going beside the new one.
DELETE_PROPAGATION = "Foreground"


class JobRunError(Exception):
    """Why a run did not succeed, in one message; ``result`` holds what was learned by then."""

    def __init__(self, msg: str, result: dict | None = None):
        super().__init__(msg)
        self.msg = msg
        self.result = result or {}


def job_outcome(job) -> str | None:
    """``'Complete'`` or ``'Failed'`` once the Job has finished (its condition of that type is
    ``"True"``), else None: still running, not started, or not a Job object. The conditions Kubernetes
    sets before the end (``SuccessCriteriaMet``, ``FailureTarget``: its pods are still terminating)
    are not an end."""
    if not isinstance(job, dict):
        return None
    conditions = (job.get("status") or {}).get("conditions") or []
    ended = {c.get("type") for c in conditions if isinstance(c, dict) and str(c.get("status")) == "True"}
    for outcome in (FAILED, COMPLETE):  # never both; a failure is never read as a success
        if outcome in ended:
            return outcome
    return None


def failed_condition(job: dict) -> dict:
    """The Job's ``Failed`` condition that is ``"True"`` (reason, message), or ``{}``."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == FAILED and str(condition.get("status")) == "True":
            return condition
    return {}


def job_identity(definition, namespace: str | None = None) -> tuple[str, str]:
    """``(namespace, name)`` of a Job ``definition``; JobRunError if it is no named batch/v1 Job.
    The definition's own namespace wins over ``namespace``."""
    if not isinstance(definition, dict):
        raise JobRunError(f"definition must be a Job object (a dict), got {type(definition).__name__}")
    if definition.get("apiVersion") != "batch/v1" or definition.get("kind") != "Job":
        raise JobRunError(f"definition must be apiVersion batch/v1, kind Job; got {definition.get('apiVersion')!r}, "
                          f"{definition.get('kind')!r}")
    metadata = definition.get("metadata") or {}
    name = metadata.get("name")
    if not name:  # generateName would make every run a new Job: nothing to replace or to find again
        raise JobRunError("definition must have metadata.name")
    namespace = metadata.get("namespace") or namespace
    if not namespace:
        raise JobRunError(f"Job {name}: no namespace, neither in the definition's metadata nor in the namespace option")
    return namespace, name


def label_selector(job: dict) -> str:
    """The Job's ``spec.selector`` as a label selector string (the API's list filter)."""
    selector = (job.get("spec") or {}).get("selector") or {}
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            terms.append(f"{key} {operator.lower()} ({','.join(values)})")
    return ",".join(terms)


def own_pods(job: dict, pods: list[dict]) -> list[dict]:
    """The pods the Job owns (by uid: not those of an earlier Job of the same name), oldest first."""
    uid = (job.get("metadata") or {}).get("uid")
    owned = [p for p in pods if any(ref.get("uid") == uid for ref in (p.get("metadata") or {}).get("ownerReferences")
                                    or [])]
    return sorted(owned, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "",
                                        (p.get("metadata") or {}).get("name") or ""))


def pods_to_log(outcome: str | None, pods: list[dict]) -> list[dict]:
    """Whose output the run's log is: for a Complete Job its Succeeded pods (the run that counted, not
    the attempts that failed before it); otherwise every pod, each attempt's output."""
    if outcome == COMPLETE:
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    return pods


def container_names(pod: dict) -> list[str]:
    """The pod's containers, in the order of its spec (init containers first, as they ran)."""
    spec = pod.get("spec") or {}
    return [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]


def pod_summary(pod: dict) -> dict:
    """Name, phase, and each container's exit code (or why it is waiting or running), for the result."""
    status = pod.get("status") or {}
    containers = []
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = c.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        entry = {"name": c.get("name"), "exit_code": None, "reason": None}
        if terminated:
            entry.update(exit_code=terminated.get("exitCode"), reason=terminated.get("reason"))
        elif waiting:
            entry["reason"] = waiting.get("reason")
        elif state.get("running") is not None:
            entry["reason"] = "Running"
        containers.append(entry)
    return {"name": (pod.get("metadata") or {}).get("name"), "phase": status.get("phase"), "containers": containers}


def describe_pods(summaries: list[dict]) -> str:
    """``name Failed (exit code 1), ...``: one phrase per pod, for messages."""
    phrases = []
    for pod in summaries:
        details = [f"exit code {c['exit_code']}" if c["exit_code"] is not None else c["reason"]
                   for c in pod["containers"] if c["exit_code"] is not None or c["reason"] not in (None, pod["phase"])]
        phrases.append(f"{pod['name']} {pod['phase'] or 'Unknown'}" + (f" ({', '.join(details)})" if details else ""))
    return ", ".join(phrases) or "none"


def log_lines_of(texts: list[str]) -> list[str]:
    """The lines of the containers' logs, in order (a log's last newline ends a line, it starts none)."""
    return [line for text in texts for line in text.splitlines()]


def failure_message(namespace: str, name: str, job: dict, pods: list[dict], log: str, *,
                    timeout: float | None = None) -> str:
    """Why the run failed, with the Job's pods and its log: ``timeout`` set when it did not finish."""
    where = f"Job {namespace}/{name}"
    if timeout is not None:
        what = f"{where} did not finish within {timeout:g} s (it is left as it is)"
    else:
        condition = failed_condition(job)
        what = f"{where} failed ({condition.get('reason') or 'no reason given'}: {condition.get('message') or ''})"
    return f"{what}; pods: {describe_pods(pods)}. Its log:\n{log if log else '(empty)'}"


def base_result(namespace: str, name: str) -> dict:
    return {"name": name, "namespace": namespace, "uid": None, "replaced": False, "succeeded": None, "status": {},
            "conditions": [], "pods": [], "log_lines": [], "log": ""}


class JobApi:
    """The few calls a run makes, on the kubernetes client's typed APIs, giving dicts as the API serves them."""

    def __init__(self, api_client):
        from kubernetes import client

        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def _dict(self, obj) -> dict:
        return self.api_client.sanitize_for_serialization(obj)

    def read(self, namespace: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._dict(self.batch.read_namespaced_job(name, namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create(self, namespace: str, definition: dict) -> dict:
        # Strict: a field the API does not know (a misspelt key of a template) is refused, naming it,
        # where the API's default (Warn) would drop it and run a Job other than the one written
        return self._dict(self.batch.create_namespaced_job(namespace, definition, field_validation="Strict"))

    def delete(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy=DELETE_PROPAGATION)
        except ApiException as e:
            if e.status != 404:
                raise

    def pods(self, namespace: str, selector: str) -> list[dict]:
        return self._dict(self.core.list_namespaced_pod(namespace, label_selector=selector)).get("items") or []

    def log(self, namespace: str, pod: str, container: str) -> str | None:
        """The container's log, or None when there is none to read (it never started, or the pod is gone)."""
        from kubernetes.client.exceptions import ApiException

        try:
            # raw bytes: the client would otherwise parse a log that happens to be JSON
            response = self.core.read_namespaced_pod_log(pod, namespace, container=container, _preload_content=False)
        except ApiException as e:
            if e.status in (400, 404):
                return None
            raise
        return response.data.decode("utf-8", errors="replace")


class _Run:
    """One run of run_job: its Job's place, its deadline, and what has been learned so far."""

    def __init__(self, api, namespace: str, name: str, *, timeout: float, poll_interval: float, clock, sleep):
        self.api, self.namespace, self.name = api, namespace, name
        self.timeout, self.poll, self.clock, self.sleep = timeout, poll_interval, clock, sleep
        self.deadline = clock() + timeout
        self.result = base_result(namespace, name)

    def pause(self) -> None:
        self.sleep(max(0.0, min(self.poll, self.deadline - self.clock())))

    def replace(self, existing: dict) -> None:
        """Delete the earlier Job and wait until it (with its pods) is gone."""
        uid = existing["metadata"]["uid"]
        self.api.delete(self.namespace, self.name)
        while (current := self.api.read(self.namespace, self.name)) is not None \
                and (current.get("metadata") or {}).get("uid") == uid:
            if self.clock() >= self.deadline:
                raise JobRunError(f"the earlier Job {self.namespace}/{self.name} was not gone within "
                                  f"{self.timeout:g} s of its deletion (its pods are still terminating?)", self.result)
            self.pause()

    def wait(self, job: dict) -> tuple[dict, str | None]:
        """The Job once Complete or Failed, or as it is at the deadline (outcome None)."""
        while (outcome := job_outcome(job)) is None and self.clock() < self.deadline:
            self.pause()
            job = self.api.read(self.namespace, self.name)
            if job is None:
                raise JobRunError(f"Job {self.namespace}/{self.name} was deleted before it finished", self.result)
        self.result.update(_job_fields(job))
        return job, outcome

    def read_logs(self, job: dict, outcome: str | None) -> list[str]:
        """Fill in the pods and the log; the pod/container of each log that could not be read."""
        pods = own_pods(job, self.api.pods(self.namespace, label_selector(job)))
        self.result["pods"] = [pod_summary(p) for p in pods]
        texts, unread = [], []
        for pod in pods_to_log(outcome, pods):
            for container in container_names(pod):
                text = self.api.log(self.namespace, pod["metadata"]["name"], container)
                if text is None:
                    unread.append(f"{pod['metadata']['name']}/{container}")
                else:
                    texts.append(text)
        if outcome == COMPLETE and len(pods_to_log(outcome, pods)) < ((job.get("status") or {}).get("succeeded") or 0):
            unread.append("its pods are gone")
        self.result["log_lines"] = log_lines_of(texts)
        self.result["log"] = "\n".join(self.result["log_lines"])
        return unread


def run_job(api, definition: dict, *, namespace: str | None = None, replace: bool = True, timeout: float = 300,
            poll_interval: float = 1.0, check_mode: bool = False, clock=time.monotonic, sleep=time.sleep) -> dict:
    """Create the Job (after deleting an earlier one of its name, with ``replace``; else wait for that
    one), wait until it is Complete or Failed, and read its pods' logs. Returns the result of a
    Complete Job; raises JobRunError, with the result so far, when it failed, did not finish within
    ``timeout`` seconds (the earlier Job's deletion included), or its log could not be read."""
    namespace, name = job_identity(definition, namespace)
    run = _Run(api, namespace, name, timeout=timeout, poll_interval=poll_interval, clock=clock, sleep=sleep)
    result = run.result
    existing = api.read(namespace, name)
    adopt = existing is not None and not replace
    result.update(changed=not adopt, replaced=existing is not None and replace)
    if check_mode:  # nothing deleted, created or waited for; an adopted Job as it is now
        if adopt:
            outcome = job_outcome(existing)
            result.update(_job_fields(existing), succeeded=None if outcome is None else outcome == COMPLETE)
        return result
    if adopt:
        job = existing
    else:
        if existing is not None:
            run.replace(existing)
        job = api.create(namespace, definition)

    job, outcome = run.wait(job)
    unread = run.read_logs(job, outcome)
    result["succeeded"] = outcome == COMPLETE
    if outcome == COMPLETE and unread:
        # a result read as empty would be taken for a real one (a count of nothing, say)
        raise JobRunError(f"Job {namespace}/{name} is Complete, but the log of its pods could not be read "
                          f"({', '.join(unread)})", result)
    if outcome != COMPLETE:
        raise JobRunError(failure_message(namespace, name, job, result["pods"], result["log"],
                                          timeout=timeout if outcome is None else None), result)
    return result


def _job_fields(job: dict) -> dict:
    status = job.get("status") or {}
    return {"uid": (job.get("metadata") or {}).get("uid"), "status": status,
            "conditions": status.get("conditions") or []}
