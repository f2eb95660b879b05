"""The lab's Kubernetes (the real API server and controllers, kwok's nodes), driven by kubernetes.core,
kubectl and helm 3: what the roles rely on, and kwok's pod life cycle as the lab configures it."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from lab.kube.cluster import FAILING_IMAGE

CHARTS = Path(__file__).parent / "charts"
K8S_DEFAULTS = {"group/kubernetes.core.k8s": {"kubeconfig": "{{ dbos_kubeconfig }}"}}


def play(*tasks, **extra) -> list[dict]:
    return [{"hosts": "localhost", "gather_facts": False, "module_defaults": K8S_DEFAULTS, "tasks": list(tasks),
             **extra}]


@pytest.fixture
def namespace(kube):
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    yield name
    client.CoreV1Api(kube).delete_namespace(name)


def test_namespace_secret_and_scaledobject_apply_read_back_and_are_idempotent(ansible, kube):
    ns = f"smoke-{uuid.uuid4().hex[:8]}"
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "smoke", "namespace": ns},
        "spec": {"scaleTargetRef": {"name": "dbos-app"}, "minReplicaCount": 1, "maxReplicaCount": 10,
                 "triggers": [{"type": "metrics-api", "metadata": {
                     "url": f"http://dbos-app.{ns}.svc.cluster.local:8080/metrics/taskQueue",
                     "valueLocation": "queue_length", "targetValue": "2"}}]},
    }
    apply = play(
        {"name": "Namespace", "kubernetes.core.k8s": {"kind": "Namespace", "name": ns, "api_version": "v1"}},
        {"name": "Secret", "kubernetes.core.k8s": {"apply": True, "definition": {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
            "type": "Opaque", "stringData": {"password": "s3cret-value", "user": "app"}}}},
        {"name": "ScaledObject", "kubernetes.core.k8s": {"apply": True, "definition": scaled_object}},
        {"name": "Read the Secret", "kubernetes.core.k8s_info": {"kind": "Secret", "namespace": ns, "name": "creds"}},
        {"name": "Read ScaledObjects", "kubernetes.core.k8s_info": {
            "api_version": "keda.sh/v1alpha1", "kind": "ScaledObject", "namespace": ns}},
    )
    first = ansible.run(apply)
    assert first.ok, first.explain()
    assert first.changed == 3

    secret = first.task("Read the Secret")["resources"][0]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == \
        {"password": "s3cret-value", "user": "app"}
    assert "stringData" not in secret
    [so] = first.task("Read ScaledObjects")["resources"]
    assert so["spec"]["triggers"][0]["metadata"]["valueLocation"] == "queue_length"
    assert so["metadata"]["uid"] and so["metadata"]["generation"] == 1

    second = ansible.run(apply)
    assert second.ok, second.explain()
    assert second.changed == 0, [n for n, r in second.tasks() if r.get("changed")]
    client.CoreV1Api(kube).delete_namespace(ns)


def test_check_mode_creates_nothing(ansible, kube, namespace):
    result = ansible.run(play({"name": "ConfigMap", "kubernetes.core.k8s": {"definition": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry", "namespace": namespace},
        "data": {"a": "b"}}}}), check=True)
    assert result.ok, result.explain()
    assert result.changed == 1
    # the real root-CA publisher puts kube-root-ca.crt in every namespace
    assert [c.metadata.name for c in client.CoreV1Api(kube).list_namespaced_config_map(namespace).items] == [
        "kube-root-ca.crt"]


def test_job_wait_returns_once_the_job_controller_completes_it(ansible, kube, namespace):
    """kwok marks the Job's pod Succeeded (it runs nothing); the real Job controller then completes the
    Job, which is what kubernetes.core's wait waits for."""
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": namespace},
           "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "m", "image": "busybox:1.36", "args": ["true"]}]}}}}
    result = ansible.run(play({"name": "Run the Job", "kubernetes.core.k8s": {
        "definition": job, "wait": True, "wait_condition": {"type": "Complete", "status": "True"},
        "wait_timeout": 60, "wait_sleep": 1}}))
    assert result.ok, result.explain()
    done = result.task("Run the Job")["result"]["status"]
    assert done["succeeded"] == 1 and done["completionTime"]
    assert {"type": "Complete", "status": "True"}.items() <= done["conditions"][-1].items()
    [pod] = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="job-name=migrate").items
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_a_job_running_the_failing_image_fails_after_its_retries(kube, namespace):
    """The lab's one way to fail a Job while kwok runs no container: its pods exit 1 (stage
    lab-pod-fail), the Job controller retries backoffLimit times, then fails the Job."""
    batch = client.BatchV1Api(kube)
    for name, image in (("doomed", FAILING_IMAGE), ("fine", "busybox:1.36")):
        batch.create_namespaced_job(namespace, {"metadata": {"name": name}, "spec": {"backoffLimit": 1, "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}})
    deadline = time.monotonic() + 60
    outcome = {}
    while time.monotonic() < deadline and len(outcome) < 2:
        for job in batch.list_namespaced_job(namespace).items:
            conditions = (job.status.conditions if job.status else None) or []
            done = [(c.type, c.reason) for c in conditions if c.type in ("Complete", "Failed") and c.status == "True"]
            if done:
                outcome[job.metadata.name] = done[0]
        time.sleep(0.5)
    assert outcome == {"doomed": ("Failed", "BackoffLimitExceeded"), "fine": ("Complete", "CompletionsReached")}
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="job-name=doomed").items
    assert len(pods) == 2  # the first try and one retry
    assert {p.status.phase for p in pods} == {"Failed"}
    assert {p.status.container_statuses[0].state.terminated.exit_code for p in pods} == {1}


def test_deployment_becomes_available_once_kwok_makes_its_pods_ready(ansible, namespace, lab):
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                      "metadata": {"labels": {"app": "web"}},
                      "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}
    result = ansible.run(play({"name": "Deploy", "kubernetes.core.k8s": {
        "definition": deployment, "wait": True, "wait_timeout": 60, "wait_sleep": 1}}))
    assert result.ok, result.explain()
    st = result.task("Deploy")["result"]["status"]
    assert st["availableReplicas"] == st["readyReplicas"] == 2
    assert st["observedGeneration"] == result.task("Deploy")["result"]["metadata"]["generation"]


def test_helm_install_upgrade_uninstall_of_a_local_chart(ansible, kube, tmp_path):
    helm_env = {f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}
    release = {"name": "tiny", "chart_ref": str(CHARTS / "tiny"), "release_namespace": "smoke-helm",
               "create_namespace": True, "binary_path": "{{ addons_helm_binary }}"}
    install = play({"name": "Install", "kubernetes.core.helm": {**release, "values": {"message": "one"}}},
                   {"name": "Info", "kubernetes.core.helm_info": {
                       "name": "tiny", "release_namespace": "smoke-helm", "binary_path": "{{ addons_helm_binary }}"}})
    first = ansible.run(install, env=helm_env)
    assert first.ok, first.explain()
    assert first.task("Install")["changed"]
    assert first.task("Info")["status"]["status"] == "deployed"
    core = client.CoreV1Api(kube)
    assert core.read_namespaced_config_map("tiny-message", "smoke-helm").data == {"message": "one"}

    again = ansible.run(install, env=helm_env)
    assert again.ok, again.explain()
    assert again.changed == 0

    remove = ansible.run(play({"name": "Uninstall", "kubernetes.core.helm": {
        "name": "tiny", "release_namespace": "smoke-helm", "state": "absent",
        "binary_path": "{{ addons_helm_binary }}"}}), env=helm_env)
    assert remove.ok, remove.explain()
    assert remove.task("Uninstall")["changed"]
    assert [c.metadata.name for c in core.list_namespaced_config_map("smoke-helm").items] == ["kube-root-ca.crt"]


def test_kubectl_and_helm_cli_work(lab, tmp_path):
    env = {**os.environ, **lab.env(),
           **{f"HELM_{d}_HOME": str(tmp_path / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
    kubectl, helm = lab.state["tools"]["kubectl"], lab.state["tools"]["helm"]
    out = subprocess.run([kubectl, "get", "namespaces", "-o", "name"], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert {"namespace/default", "namespace/kube-system"} <= set(out)
    subprocess.run([helm, "install", "cli", str(CHARTS / "tiny"), "-n", "smoke-cli", "--create-namespace"],
                   env=env, check=True, capture_output=True)
    listed = subprocess.run([helm, "list", "-n", "smoke-cli", "-q"], env=env, capture_output=True, text=True,
                            check=True).stdout.split()
    assert listed == ["cli"]
    subprocess.run([helm, "uninstall", "cli", "-n", "smoke-cli"], env=env, check=True, capture_output=True)
    assert subprocess.run([helm, "list", "-n", "smoke-cli", "-q"], env=env, capture_output=True, text=True,
                          check=True).stdout.split() == []


def test_crds_are_registered(kube):
    crds = client.ApiextensionsV1Api(kube).list_custom_resource_definition().items
    assert {c.metadata.name for c in crds} >= {
        "scaledobjects.keda.sh", "triggerauthentications.keda.sh", "sealedsecrets.bitnami.com"}
    assert all(any(c.type == "Established" and c.status == "True" for c in crd.status.conditions) for crd in crds)
