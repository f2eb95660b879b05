"""Unit tests for one pass of the reconciler (tests/roles/test_reconciler.py runs it against the real
API server, DBOS and pods): what it resumes, and what it leaves, given what the database and the API
answer. The client and the API here answer from lists the test sets; the Lease is one the test holds."""

from __future__ import annotations

from dataclasses import dataclass

from dbos_reconciler.service import Reconciler, Settings

SETTINGS = Settings(database_url="postgresql://app@db/dbos_app", namespace="dbos", identity="dbos-app-reconciler-a",
                    lease_name="dbos-app-reconciler", executor_prefix="dbos-app-", lease_seconds=15,
                    interval_seconds=1, max_recoveries=2)


@dataclass
class Status:
    workflow_id: str
    executor_id: str
    queue_name: str | None = "taskQueue"
    app_version: str | None = "1"
    status: str = "PENDING"


class Client:
    """DBOS's client as the reconciler calls it: list_workflows' filters, resume_workflows' effect."""

    def __init__(self, workflows):
        self.workflows = {w.workflow_id: w for w in workflows}
        self.resumed: list[tuple[list[str], str | None]] = []

    def list_workflows(self, *, workflow_ids=None, status=None, executor_id=None, application_name=None, **_):
        return [w for w in self.workflows.values() if (workflow_ids is None or w.workflow_id in workflow_ids)
                and (status is None or w.status == status) and (executor_id is None or w.executor_id == executor_id)]

    def resume_workflows(self, ids, *, queue_name=None):
        self.resumed.append((list(ids), queue_name))
        for wid in ids:
            self.workflows[wid].status = "ENQUEUED"


class Pods:
    def __init__(self, pods):
        self.listed = pods

    def pods(self, namespace):
        return dict(self.listed)


class Lease:
    def __init__(self, fresh=True):
        self.fresh, self.rounds = fresh, 0

    def try_acquire_or_renew(self):
        self.rounds += 1
        return True

    def holding(self, margin=2.0):
        return self.fresh


def test_a_gone_pods_work_is_resumed_on_its_queue_and_a_live_pods_is_left():
    client = Client([Status("w1", "dbos-app-x-dead1"), Status("w2", "dbos-app-x-dead1", queue_name=None),
                     Status("w3", "dbos-app-x-alive"), Status("w4", "laptop")])
    reconciler = Reconciler(SETTINGS, client, Pods({"dbos-app-x-alive": "Running"}), Lease())
    done = reconciler.reconcile()
    assert [(r.executor_id, r.workflow_ids) for r in done] == [("dbos-app-x-dead1", ("w2",)),
                                                               ("dbos-app-x-dead1", ("w1",))]
    assert client.resumed == [(["w2"], None), (["w1"], "taskQueue")]
    assert reconciler.recovered_total == 2


def test_nothing_is_resumed_once_the_lease_is_stale():
    client = Client([Status("w1", "dbos-app-x-dead1")])
    reconciler = Reconciler(SETTINGS, client, Pods({}), Lease(fresh=False))
    assert reconciler.reconcile() == [] and client.resumed == []


def test_a_workflow_that_finished_or_moved_since_the_first_read_is_not_resumed():
    client = Client([Status("w1", "dbos-app-x-dead1"), Status("w2", "dbos-app-x-dead1")])

    class Racing(Pods):  # between the read of the workflows and the resume: w1 finished, w2 went elsewhere
        def pods(self, namespace):
            client.workflows["w1"].status = "SUCCESS"
            client.workflows["w2"].executor_id = "dbos-app-x-alive"
            return {"dbos-app-x-alive": "Running"}

    assert Reconciler(SETTINGS, client, Racing({}), Lease()).reconcile() == []
    assert client.resumed == []


def test_a_workflow_resumed_max_recoveries_times_is_left_pending_and_said_once(caplog):
    client = Client([Status("w1", "dbos-app-x-dead1")])
    reconciler = Reconciler(SETTINGS, client, Pods({}), Lease())
    for executor in ("dbos-app-x-dead1", "dbos-app-x-dead2", "dbos-app-x-dead3", "dbos-app-x-dead4"):
        client.workflows["w1"].status, client.workflows["w1"].executor_id = "PENDING", executor  # ran, its pod died
        reconciler.reconcile()
    assert [ids for ids, _queue in client.resumed] == [["w1"], ["w1"]]
    assert client.workflows["w1"].status == "PENDING"
    assert [r.getMessage() for r in caplog.records].count("recovery_abandoned") == 1
