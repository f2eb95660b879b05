"""Which workflows to hand back to their queue: the decision, apart from how it is read and carried out.

A DBOS workflow that a worker has dequeued is PENDING and belongs to that worker's executor id, which
the app role sets to the pod's name. DBOS recovers PENDING work only in a process of the same executor
id (at its start), so when a pod is gone for good its PENDING workflows would wait forever: a Deployment's
replacement pod has another name.

The rule, safe by construction:

- a pod whose object exists is alive, whatever its state: Pending, Running, Terminating (its process may
  still be finishing its workflows within its grace period), or a container restarting (the process
  that starts again has the same name, and recovers its own work);
- a pod whose object is gone is dead: Kubernetes removes the object only once the kubelet has seen the
  containers stop; or when it is force-deleted (``--grace-period=0 --force``, or the pod garbage
  collector once a lost node's Node object is deleted), which Kubernetes itself warns may leave the
  process running: then its work may run twice, and that is the one case this rule cannot see;
- so is a pod in phase Succeeded or Failed (evicted, say): those phases are final, its containers never
  run again;
- only executors named like the application's pods (``executor_prefix``) are considered: the work of
  any other executor in the same database (a developer's laptop, another application) is left alone.

The workflows must be read before the pods are listed: a pod created between the two reads is then in
the list if it already owns a workflow (it existed before it could dequeue one), so a live pod is never
taken for dead. :func:`recoveries` assumes that order; :mod:`dbos_reconciler.service` keeps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Pending:
    """A PENDING workflow as the system database has it."""

    workflow_id: str
    executor_id: str | None
    queue_name: str | None
    app_version: str | None = None


@dataclass(frozen=True)
class Recovery:
    """Workflows of one dead executor on one queue: handed back to that queue together."""

    executor_id: str
    queue_name: str | None  # None: not on a queue; DBOS's internal queue runs them
    workflow_ids: tuple[str, ...]
    app_versions: tuple[str, ...]


def is_dead(executor_id: str | None, pods: Mapping[str, str], executor_prefix: str) -> bool:
    """Whether ``executor_id`` is one of the application's pods that no longer runs.

    ``pods``: every pod of the namespace, by name, with its phase (all of them, not only those
    labelled as the application's: a pod that exists is alive whatever its labels)."""
    if not executor_id or not executor_id.startswith(executor_prefix) or executor_id == executor_prefix:
        return False
    phase = pods.get(executor_id)
    return phase is None or phase in TERMINAL_PHASES


def recoveries(pending: Iterable[Pending], pods: Mapping[str, str], executor_prefix: str) -> list[Recovery]:
    """The PENDING workflows of dead executors, by executor and queue, in a stable order."""
    if not executor_prefix:
        raise ValueError("executor_prefix must not be empty: every executor would be a candidate")
    groups: dict[tuple[str, str | None], list[Pending]] = {}
    for workflow in pending:
        if is_dead(workflow.executor_id, pods, executor_prefix):
            groups.setdefault((workflow.executor_id, workflow.queue_name), []).append(workflow)
    return [
        Recovery(executor_id=executor, queue_name=queue,
                 workflow_ids=tuple(sorted(w.workflow_id for w in group)),
                 app_versions=tuple(sorted({w.app_version for w in group if w.app_version})))
        for (executor, queue), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]
