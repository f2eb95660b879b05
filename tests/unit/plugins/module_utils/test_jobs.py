"""Unit tests for plugins/module_utils/jobs.py: the decisions of a Job's run, on Job and pod objects as
the API serves them. tests/modules/test_job_run.py runs real Jobs on the lab's API server."""

from __future__ import annotations

import pytest
from ansible_collections.dbos.deploy.plugins.module_utils import jobs

from tests.unit.plugins.module_utils.fake_time import FakeTime


def job(*conditions, uid="u1", name="j", succeeded=None, selector=None):
    status = {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]}
    if succeeded is not None:
        status["succeeded"] = succeeded
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"selector": selector or {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}},
            "status": status}


def pod(name, phase, *, owner="u1", created="2025-01-01T00:00:00Z", exit_code=None, waiting=None,
        containers=("main",)):
    state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error"}} \
        if exit_code is not None else {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"name": name, "creationTimestamp": created, "ownerReferences": [{"uid": owner}]},
            "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"phase": phase, "containerStatuses": [{"name": c, "state": state} for c in containers]}}


@pytest.mark.parametrize(("conditions", "outcome"), [
    ([("Complete", "True", None, None)], "Complete"),
    ([("SuccessCriteriaMet", "True", None, None), ("Complete", "True", None, None)], "Complete"),
    ([("FailureTarget", "True", "BackoffLimitExceeded", "x"), ("Failed", "True", "BackoffLimitExceeded", "x")],
     "Failed"),
    # the pods of a finishing Job are still terminating: not an end yet
    ([("SuccessCriteriaMet", "True", None, None)], None),
    ([("FailureTarget", "True", "BackoffLimitExceeded", "x")], None),
    ([("Complete", "False", None, None)], None),
    ([("Suspended", "True", None, None)], None),
    ([], None),
])
def test_a_job_ends_when_its_complete_or_failed_condition_is_true(conditions, outcome):
    assert jobs.job_outcome(job(*conditions)) == outcome


@pytest.mark.parametrize("value", [None, {}, "Complete", [], {"status": None}, {"status": {"conditions": None}}])
def test_what_is_no_job_has_no_outcome(value):
    assert jobs.job_outcome(value) is None


def test_a_failure_is_never_read_as_a_success():
    assert jobs.job_outcome(job(("Complete", "True", None, None), ("Failed", "True", None, None))) == "Failed"


def test_the_failed_condition_gives_reason_and_message():
    j = job(("FailureTarget", "True", "BackoffLimitExceeded", "a"), ("Failed", "True", "DeadlineExceeded", "b"))
    assert (jobs.failed_condition(j)["reason"], jobs.failed_condition(j)["message"]) == ("DeadlineExceeded", "b")
    assert jobs.failed_condition(job(("Complete", "True", None, None))) == {}


@pytest.mark.parametrize(("definition", "message"), [
    ("kind: Job", "must be a Job object"),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "batch/v1, kind Job"),
    ({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "j-"}}, "metadata.name"),
    ({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}, "no namespace"),
])
def test_a_definition_must_be_a_named_job_with_a_namespace(definition, message):
    with pytest.raises(jobs.JobRunError, match=message):
        jobs.job_identity(definition)


def test_the_definitions_namespace_wins_over_the_option():
    definition = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "a"}}
    assert jobs.job_identity(definition, "b") == ("a", "j")
    del definition["metadata"]["namespace"]
    assert jobs.job_identity(definition, "b") == ("b", "j")


def test_the_label_selector_of_a_generated_and_of_a_manual_selector():
    assert jobs.label_selector(job(uid="x")) == "batch.kubernetes.io/controller-uid=x"
    manual = {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["x", "y"]}, {"key": "k", "operator": "Exists"},
        {"key": "z", "operator": "DoesNotExist"}, {"key": "e", "operator": "NotIn", "values": ["v"]}]}
    assert jobs.label_selector(job(selector=manual)) == "a=1,b=2,tier in (x,y),k,!z,e notin (v)"


def test_only_the_jobs_own_pods_count_oldest_first():
    pods = [pod("late", "Failed", created="2025-01-01T00:00:09Z"), pod("earlier-job", "Succeeded", owner="u0"),
            pod("first", "Failed", created="2025-01-01T00:00:01Z")]
    assert [p["metadata"]["name"] for p in jobs.own_pods(job(), pods)] == ["first", "late"]


def test_a_complete_jobs_log_is_its_succeeded_pods_and_a_failed_jobs_every_attempt():
    pods = [pod("a", "Failed", exit_code=1), pod("b", "Succeeded", exit_code=0)]
    assert [p["metadata"]["name"] for p in jobs.pods_to_log("Complete", pods)] == ["b"]
    assert [p["metadata"]["name"] for p in jobs.pods_to_log("Failed", pods)] == ["a", "b"]
    assert [p["metadata"]["name"] for p in jobs.pods_to_log(None, pods)] == ["a", "b"]


def test_pods_are_summed_up_with_exit_codes_and_waiting_reasons():
    summaries = [jobs.pod_summary(p) for p in (pod("a", "Failed", exit_code=3), pod("b", "Pending", waiting="Image"),
                                               pod("c", "Running"))]
    assert summaries[0] == {"name": "a", "phase": "Failed",
                            "containers": [{"name": "main", "exit_code": 3, "reason": "Error"}]}
    assert jobs.describe_pods(summaries) == "a Failed (exit code 3), b Pending (Image), c Running"
    assert jobs.describe_pods([]) == "none"


def test_log_lines_keep_each_containers_lines_in_order():
    assert jobs.log_lines_of(["one\ntwo\n", "", "three"]) == ["one", "two", "three"]
    assert jobs.log_lines_of(["blank\n\nline\n"]) == ["blank", "", "line"]


def test_the_failure_message_names_the_job_the_condition_the_pods_and_the_log():
    failed = job(("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    summaries = [jobs.pod_summary(pod("j-x", "Failed", exit_code=1))]
    msg = jobs.failure_message("ns", "j", failed, summaries, "psql: error: connection refused")
    assert msg == ("Job ns/j failed (BackoffLimitExceeded: Job has reached the specified backoff limit); "
                   "pods: j-x Failed (exit code 1). Its log:\npsql: error: connection refused")
    slow = jobs.failure_message("ns", "j", job(), [], "", timeout=2.5)
    assert slow.startswith("Job ns/j did not finish within 2.5 s") and slow.endswith("Its log:\n(empty)")


class Api:
    """The API as run_job sees it, in memory: ``existing`` is there until deleted; once created, each
    read of the Job gives the next of ``states`` (the last one stays)."""

    def __init__(self, existing=None, states=(), pods=(), logs=None):
        self.existing, self.states, self._pods, self.logs = existing, list(states), list(pods), logs or {}
        self.created = False
        self.calls = []

    def read(self, namespace, name):
        self.calls.append("read")
        if not self.created:
            return self.existing
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def create(self, namespace, definition):
        self.calls.append("create")
        self.created = True
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def delete(self, namespace, name):
        self.calls.append("delete")
        self.existing = None

    def pods(self, namespace, selector):
        return self._pods

    def log(self, namespace, pod, container):
        return self.logs.get(pod)


DEFINITION = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ns"}}


def run(api, **options):
    clock = FakeTime()
    return jobs.run_job(api, DEFINITION, clock=clock, sleep=clock.sleep, **options)


def test_check_mode_neither_deletes_nor_creates():
    api = Api(existing=job(("Complete", "True", None, None)))
    result = run(api, check_mode=True)
    assert (result["changed"], result["replaced"], result["succeeded"], result["log_lines"]) == (True, True, None, [])
    assert api.calls == ["read"]


def test_without_replace_an_existing_job_is_reported_as_it_is_in_check_mode():
    api = Api(existing=job(("Failed", "True", "BackoffLimitExceeded", "x")))
    result = run(api, replace=False, check_mode=True)
    assert (result["changed"], result["succeeded"], result["uid"]) == (False, False, "u1")
    assert api.calls == ["read"]


def test_a_run_replaces_the_earlier_job_and_gives_the_log_of_the_attempt_that_succeeded():
    api = Api(existing=job(uid="old"), states=[job(), job(), job(("Complete", "True", None, None), succeeded=1)],
              pods=[pod("j-a", "Failed", exit_code=1, created="2025-01-01T00:00:01Z"),
                    pod("j-b", "Succeeded", exit_code=0, created="2025-01-01T00:00:05Z"),
                    pod("old-x", "Succeeded", exit_code=0, owner="old")],
              logs={"j-a": "error\n", "j-b": "v1|3\nv2|1\n", "old-x": "stale\n"})
    result = run(api)
    assert api.calls[:3] == ["read", "delete", "read"] and api.calls.count("create") == 1
    assert (result["changed"], result["replaced"], result["succeeded"]) == (True, True, True)
    assert result["log_lines"] == ["v1|3", "v2|1"] and result["log"] == "v1|3\nv2|1"
    assert [p["name"] for p in result["pods"]] == ["j-a", "j-b"]


def test_a_failed_run_raises_with_every_attempts_log():
    api = Api(states=[job(("Failed", "True", "BackoffLimitExceeded", "limit"))],
              pods=[pod("j-a", "Failed", exit_code=3)], logs={"j-a": "boom\n"})
    with pytest.raises(jobs.JobRunError) as failed:
        run(api)
    assert failed.value.msg.endswith("pods: j-a Failed (exit code 3). Its log:\nboom")
    assert (failed.value.result["succeeded"], failed.value.result["log_lines"]) == (False, ["boom"])


def test_a_run_that_does_not_finish_in_time_raises_with_the_log_so_far():
    api = Api(states=[job()], pods=[pod("j-a", "Running")], logs={"j-a": "working\n"})
    with pytest.raises(jobs.JobRunError) as slow:
        run(api, timeout=3)
    assert slow.value.msg == ("Job ns/j did not finish within 3 s (it is left as it is); pods: j-a Running. "
                              "Its log:\nworking")
    assert slow.value.result["succeeded"] is False and api.calls.count("read") == 4  # at 0 (before), 1, 2, 3 s


def test_a_complete_job_whose_log_cannot_be_read_fails_rather_than_give_an_empty_result():
    api = Api(states=[job(), job(("Complete", "True", None, None), succeeded=1)],
              pods=[pod("j-x", "Succeeded", exit_code=0)], logs={})
    with pytest.raises(jobs.JobRunError, match="Complete, but the log of its pods could not be read \\(j-x/main\\)"):
        run(api)
    gone = Api(states=[job(), job(("Complete", "True", None, None), succeeded=1)], pods=[])
    with pytest.raises(jobs.JobRunError, match="its pods are gone"):
        run(gone)


def test_a_job_deleted_while_it_runs_fails_the_run():
    api = Api(states=[job(), None])
    with pytest.raises(jobs.JobRunError, match="was deleted before it finished"):
        run(api)


def test_an_earlier_job_still_there_at_the_deadline_fails_the_run_before_anything_is_created():
    api = Api(existing=job(uid="old"))
    api.delete = lambda namespace, name: api.calls.append("delete")  # its pods never terminate
    with pytest.raises(jobs.JobRunError, match="earlier Job ns/j was not gone within 5 s"):
        run(api, timeout=5)
    assert "create" not in api.calls
