"""The lab's Kubernetes stand-in, driven by kubernetes.core, kubectl and helm 3."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from lab.kube import status
from lab.kube.emulator import label_selector_matches

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


@pytest.fixture
def status_policy(kube):
    """Set the status stand-in's policy for one test (see lab/kube/status.py)."""
    core = client.CoreV1Api(kube)

    def set_policy(**data):
        body = {"metadata": {"name": status.POLICY_NAME}, "data": {k: str(v) for k, v in data.items()}}
        try:
            core.replace_namespaced_config_map(status.POLICY_NAME, status.POLICY_NAMESPACE, body)
        except client.ApiException:
            core.create_namespaced_config_map(status.POLICY_NAMESPACE, body)

    yield set_policy
    core.delete_namespaced_config_map(status.POLICY_NAME, status.POLICY_NAMESPACE)


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
    assert client.CoreV1Api(kube).list_namespaced_config_map(namespace).items == []


def test_job_wait_returns_when_the_status_stand_in_completes_it(ansible, kube, namespace, status_policy):
    status_policy(mode="manual")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": namespace},
           "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "m", "image": "busybox:1.36", "args": ["true"]}]}}}}
    waiting = play({"name": "Run the Job", "kubernetes.core.k8s": {
        "definition": job, "wait": True, "wait_condition": {"type": "Complete", "status": "True"},
        "wait_timeout": 60, "wait_sleep": 1}})
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", ansible.run(waiting)), daemon=True)
    runner.start()
    batch = client.BatchV1Api(kube)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = batch.list_namespaced_job(namespace).items
        if jobs:
            break
        time.sleep(0.2)
    time.sleep(2)
    assert runner.is_alive(), "the playbook returned before the Job was marked complete"
    unmarked = batch.read_namespaced_job("migrate", namespace).status
    assert unmarked is None or not unmarked.conditions

    status.mark_job(batch, namespace, "migrate")
    runner.join(60)
    result = outcome["result"]
    assert result.ok, result.explain()
    conditions = result.task("Run the Job")["result"]["status"]["conditions"]
    assert {"type": "Complete", "status": "True"}.items() <= conditions[-1].items()


def test_deployment_becomes_available_after_the_stand_in_delay(ansible, namespace, lab):
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


def test_failed_jobs_by_policy(kube, namespace, status_policy):
    status_policy(mode="auto", delaySeconds="0", failJobs="doomed-*")
    batch = client.BatchV1Api(kube)
    for name in ("doomed-1", "fine-1"):
        batch.create_namespaced_job(namespace, {"metadata": {"name": name}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    deadline = time.monotonic() + 20
    outcome = {}
    while time.monotonic() < deadline and len(outcome) < 2:
        for job in batch.list_namespaced_job(namespace).items:
            conditions = (job.status.conditions if job.status else None) or []
            done = [c.type for c in conditions if c.type in ("Complete", "Failed")]
            if done:
                outcome[job.metadata.name] = done[0]
        time.sleep(0.2)
    assert outcome == {"doomed-1": "Failed", "fine-1": "Complete"}


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
    assert [c.metadata.name for c in core.list_namespaced_config_map("smoke-helm").items] == []


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


@pytest.mark.parametrize(("selector", "expected"), [
    ("", True), ("app=web", True), ("app==web", True), ("app!=web", False), ("app", True), ("!app", False),
    ("app in (web,db)", True), ("app notin (web)", False), ("tier", False), ("app=web,tier!=x", True),
    ("app in (db, cache),tier", False),
])
def test_label_selectors(selector, expected):
    assert label_selector_matches(selector, {"app": "web"}) is expected


def test_the_keda_stand_in_reconciles_the_others_when_one_scaledobject_fails():
    """A ScaledObject can outlive its namespace here (the emulator collects no garbage): its 404 must not stop
    the stand-in from making the other ScaledObjects' HPAs, as KEDA reconciles each on its own."""
    from kubernetes import client as k8s

    from lab.kube.keda import KedaController

    def scaled(namespace):
        return {"metadata": {"name": "so", "namespace": namespace, "uid": namespace, "generation": 1},
                "spec": {"scaleTargetRef": {"name": "app"}, "triggers": []}}

    class Apps:
        def list_deployment_for_all_namespaces(self, label_selector):
            return type("L", (), {"items": ["keda-operator"]})()

        def read_namespaced_deployment(self, name, namespace):
            raise k8s.ApiException(status=404)

    made = []

    class Autoscaling:
        def create_namespaced_horizontal_pod_autoscaler(self, namespace, body):
            if namespace == "gone":
                raise k8s.ApiException(status=404, reason="namespaces \"gone\" not found")
            made.append((namespace, body["metadata"]["name"]))

    class Custom:
        def list_cluster_custom_object(self, group, version, plural):
            return {"items": [scaled("gone"), scaled("live")]}

        def patch_namespaced_custom_object_status(self, *args):
            pass

    controller = KedaController.__new__(KedaController)
    controller.apps, controller.autoscaling, controller.custom, controller.done = Apps(), Autoscaling(), Custom(), {}
    controller.step(enabled=True)
    assert made == [("live", "keda-hpa-so")]
    assert controller.done == {"gone": 1, "live": 1}  # the orphan is not retried on every step
