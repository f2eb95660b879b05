"""dbos.deploy.job_run on the lab's API server: its Jobs' containers (the postgres image's, whose
commands the lab's pod runner runs: psql, and the shell of the image's base) really run, and the real
Job controller completes or fails them."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.sample_app.harness import wait_for

IMAGE = "postgres:16"  # the lab runs its psql, and any command of its Debian base


def job(name: str, namespace: str, command: list[str], backoff_limit: int = 0) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace},
            "spec": {"backoffLimit": backoff_limit, "ttlSecondsAfterFinished": 600, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE, "command": command}]}}}}


def play(lab, *tasks: dict) -> list[dict]:
    """One play running ``tasks`` (a failing one does not stop it), its connection set once for the
    group dbos.deploy.k8s, as the roles set it."""
    return [{"hosts": "localhost", "gather_facts": False,
             "module_defaults": {"group/dbos.deploy.k8s": {"kubeconfig": lab.kube["kubeconfig"]}},
             "tasks": [{"ignore_errors": True, **t} for t in tasks]}]


def run_task(name: str, **args) -> dict:
    return {"name": name, "dbos.deploy.job_run": args}


@pytest.fixture(scope="module")
def namespace(kube):
    name = f"job-run-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(kube).delete_namespace(name)


def pods(kube, namespace: str, job_name: str) -> list[client.V1Pod]:
    return client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"job-name={job_name}").items


def test_a_job_that_succeeds_gives_its_log_and_one_that_fails_fails_with_it(ansible, lab, kube, namespace):
    result = ansible.run(play(
        lab,
        run_task("Version", definition=job("version", namespace, ["psql", "--version"])),
        run_task("Exit 3", timeout=120,
                 definition=job("exit-3", namespace, ["sh", "-c", "echo about to fail; echo >&2 bad; exit 3"])),
        # one of the collection's modules beside kubernetes.core's, in the same group's defaults
        {"name": "Read it back", "kubernetes.core.k8s_info": {"kind": "Job", "api_version": "batch/v1",
                                                              "name": "exit-3", "namespace": namespace}},
    ))
    version = result.task("Version")
    assert version["changed"] and version["succeeded"] is True and not version.get("failed"), version
    [line] = version["log_lines"]
    assert line.startswith("psql (PostgreSQL) 16"), line
    assert version["log"] == line
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in version["conditions"])
    assert version["status"]["completionTime"] and version["replaced"] is False
    [summary] = version["pods"]
    assert summary["phase"] == "Succeeded" and summary["containers"] == [
        {"name": "main", "exit_code": 0, "reason": "Completed"}]

    failed = result.task("Exit 3")
    assert failed["failed"] and failed["succeeded"] is False
    msg = failed["msg"]
    assert msg.startswith(f"Job {namespace}/exit-3 failed (BackoffLimitExceeded: "), msg
    # (stdout and stderr: the log has both, in the order the container's two streams were read)
    assert "(exit code 3)" in msg and sorted(msg.split("Its log:\n", 1)[1].split("\n")) == ["about to fail", "bad"], msg
    assert sorted(failed["log_lines"]) == ["about to fail", "bad"]
    [pod] = pods(kube, namespace, "exit-3")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3
    assert result.task("Read it back")["resources"][0]["metadata"]["uid"] == failed["uid"]


def test_hidden_values_are_masked_in_the_log_and_the_failure_message(ansible, lab, namespace):
    secret = f"s3cret-{uuid.uuid4().hex}"
    result = ansible.run(play(lab, run_task(
        "Echo", hide=[secret], timeout=120,
        definition=job("echo", namespace, ["sh", "-c", f"echo 'ERROR: LINE 1: PASSWORD {secret}'; exit 1"]))))
    echoed = result.task("Echo")
    assert echoed["failed"] and echoed["log_lines"] == ["ERROR: LINE 1: PASSWORD ********"], echoed
    assert secret not in result.stdout + result.stderr


def test_a_job_that_does_not_finish_in_time_fails_and_is_replaced_by_the_next_run(ansible, lab, kube, namespace):
    """The timed-out Job is left running; the next run deletes it, its running pod first (the process
    is stopped), before the new one starts."""
    slow = ansible.run(play(lab, run_task("Slow", definition=job("same-name", namespace, ["sleep", "300"]),
                                          timeout=4, poll_interval=0.5)))
    timed_out = slow.task("Slow")
    assert timed_out["failed"] and timed_out["succeeded"] is False
    assert f"Job {namespace}/same-name did not finish within 4 s" in timed_out["msg"], timed_out["msg"]
    batch = client.BatchV1Api(kube)
    old = batch.read_namespaced_job("same-name", namespace)
    assert old.metadata.uid == timed_out["uid"] and not old.status.conditions
    wait_for(lambda: [p for p in pods(kube, namespace, "same-name") if p.status.phase == "Running"], 30,
             "the slow Job's pod running")
    [old_pod] = pods(kube, namespace, "same-name")

    quick = ansible.run(play(lab, run_task("Quick", definition=job("same-name", namespace, ["echo", "second"]))))
    replaced = quick.task("Quick")
    assert replaced["succeeded"] is True and replaced["replaced"] is True, replaced
    assert replaced["uid"] != old.metadata.uid and replaced["log_lines"] == ["second"]
    # the earlier run's pod was gone before the new Job was made: only the new one's is left
    [new_pod] = pods(kube, namespace, "same-name")
    assert new_pod.metadata.uid != old_pod.metadata.uid
    assert new_pod.metadata.owner_references[0].uid == replaced["uid"]


def test_check_mode_creates_nothing_and_replace_false_waits_for_the_job_there(ansible, lab, kube, namespace):
    batch = client.BatchV1Api(kube)
    checked = ansible.run(play(
        lab, run_task("New", definition=job("not-made", namespace, ["echo", "x"]))), check=True)
    new = checked.task("New")
    assert (new["changed"], new["succeeded"], new["log_lines"], new.get("failed", False)) == (True, None, [], False)
    assert "not-made" not in [j.metadata.name for j in batch.list_namespaced_job(namespace).items]

    done = ansible.run(play(lab, run_task("Once", definition=job("kept", namespace, ["echo", "ran once"]))))
    uid = done.task("Once")["uid"]
    kept = job("kept", namespace, ["echo", "never run"])
    again = ansible.run(play(lab, run_task("Again", definition=kept, replace=False)))
    adopted = again.task("Again")
    assert (adopted["changed"], adopted["succeeded"], adopted["uid"], adopted["log_lines"]) == (
        False, True, uid, ["ran once"])
    previews = ansible.run(play(lab, run_task("Kept", definition=kept, replace=False),
                                run_task("Replaced", definition=kept)), check=True)
    assert (previews.task("Kept")["changed"], previews.task("Kept")["succeeded"]) == (False, True)
    assert (previews.task("Replaced")["changed"], previews.task("Replaced")["replaced"]) == (True, True)
    assert batch.read_namespaced_job("kept", namespace).metadata.uid == uid


def test_a_definition_that_is_no_job_fails_before_any_call(ansible, lab, namespace):
    result = ansible.run(play(lab, run_task("Pod", definition={"apiVersion": "v1", "kind": "Pod",
                                                               "metadata": {"name": "p", "namespace": namespace}})))
    assert "must be apiVersion batch/v1, kind Job" in result.task("Pod")["msg"]


def test_a_field_the_api_does_not_know_is_refused_by_the_server_naming_it(ansible, lab, kube, namespace):
    """Created with strict field validation: the API's default (Warn) would drop the misspelt key and run
    a Job without it."""
    typo = job("typo", namespace, ["echo", "x"])
    typo["spec"]["template"]["spec"]["containers"][0]["comand"] = ["echo", "y"]
    failed = ansible.run(play(lab, run_task("Typo", definition=typo))).task("Typo")
    assert failed["failed"] and failed["msg"].startswith("the Kubernetes API refused: 400 Bad Request"), failed
    assert 'unknown field \\"spec.template.spec.containers[0].comand\\"' in failed["msg"], failed["msg"]
    assert "typo" not in [j.metadata.name for j in client.BatchV1Api(kube).list_namespaced_job(namespace).items]
