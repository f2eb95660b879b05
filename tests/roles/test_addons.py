"""Role dbos.deploy.addons on the lab: helm 3 installs of the lab's stand-in charts (tests/lab/charts),
the controllers verified the way a user checks them."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess

import pytest
from kubernetes import client

from lab.core import REPO
from lab.kube.status import POLICY_NAME, POLICY_NAMESPACE

CHARTS = REPO / "tests" / "lab" / "charts"
PLAY = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.addons"]}]


@pytest.fixture(scope="module")
def converged(runner):
    result = runner.run(PLAY)
    assert result.ok, result.explain()
    return result


def release(kube, name: str, namespace: str) -> dict | None:
    """The newest helm release record (what `helm list` reads), or None."""
    secrets = client.CoreV1Api(kube).list_namespaced_secret(namespace, label_selector=f"owner=helm,name={name}").items
    if not secrets:
        return None
    newest = max(secrets, key=lambda s: int(s.metadata.labels["version"]))
    return json.loads(gzip.decompress(base64.b64decode(base64.b64decode(newest.data["release"]))))


def test_both_controllers_are_installed_and_available(converged, kube):
    apps = client.AppsV1Api(kube)
    sealed = apps.list_namespaced_deployment("kube-system", label_selector="app.kubernetes.io/name=sealed-secrets")
    keda = apps.list_namespaced_deployment("keda", label_selector="app.kubernetes.io/part-of=keda-operator")
    assert [d.metadata.name for d in sealed.items] == ["sealed-secrets"]
    assert sorted(d.metadata.name for d in keda.items) == [
        "keda-admission-webhooks", "keda-operator", "keda-operator-metrics-apiserver"]
    assert all(d.status.available_replicas == 1 for d in sealed.items + keda.items)
    for name, namespace in (("sealed-secrets", "kube-system"), ("keda", "keda")):
        record = release(kube, name, namespace)
        assert record["info"]["status"] == "deployed" and record["chart"]["metadata"]["name"] == name
    waited = converged.task("Wait for the controllers to be available")["results"]
    assert [len(r["resources"]) for r in waited] == [1, 3]


def test_second_run_changes_nothing(converged, runner):
    again = runner.run(PLAY)
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_check_mode_changes_nothing(converged, runner, kube):
    converged_check = runner.run(PLAY, check=True)
    assert converged_check.ok, converged_check.explain()
    assert converged_check.changed == 0

    # a release that does not exist yet: reported as a change, installed nowhere
    preview = runner.run(PLAY, check=True, extra_vars={
        "addons_enabled": ["keda"], "addons_keda_release": "keda-preview", "addons_keda_namespace": "keda-preview"})
    assert preview.ok, preview.explain()
    installs = preview.task("Install or upgrade the charts")["results"]
    assert [r["item"]["release"] for r in installs] == ["keda-preview"] and installs[0]["changed"]
    assert release(kube, "keda-preview", "keda-preview") is None
    assert "keda-preview" not in [n.metadata.name for n in client.CoreV1Api(kube).list_namespace().items]


def test_controllers_that_never_become_available_fail_the_role_after_the_timeout(converged, runner, kube):
    core = client.CoreV1Api(kube)
    policy = {"metadata": {"name": POLICY_NAME}, "data": {"mode": "manual"}}
    core.create_namespaced_config_map(POLICY_NAMESPACE, policy)
    try:
        stuck = runner.run(PLAY, extra_vars={"addons_enabled": ["keda"], "addons_keda_release": "keda-stuck",
                                             "addons_keda_namespace": "keda-stuck", "addons_wait_timeout": 3})
    finally:
        core.delete_namespaced_config_map(POLICY_NAME, POLICY_NAMESPACE)
    assert not stuck.ok
    failed = stuck.task("Wait for the controllers to be available")
    assert failed["failed"] and "keda-stuck" in json.dumps(failed)


@pytest.mark.parametrize(("extra", "failing_task", "message"), [
    ({"addons_enabled": ["istio"]}, "Validating arguments", "addons_enabled"),
    ({"addons_keda_chart_path": "/nonexistent/keda"}, "Check that every local chart exists", "/nonexistent/keda"),
    ({"addons_helm_binary": "/bin/echo"}, "Check that helm is version 3", "version"),
])
def test_bad_input_fails_before_helm_runs(converged, runner, extra, failing_task, message):
    result = runner.run(PLAY, extra_vars=extra)
    assert not result.ok
    [(name, failed)] = [(n, r) for n, r in result.tasks() if r.get("failed")]
    assert failing_task in name and message in json.dumps(failed)
    assert not any(n.endswith("Install or upgrade the charts") for n, _ in result.tasks())


def test_a_chart_archive_installs_like_a_folder(converged, runner, lab, kube, tmp_path):
    """Air-gapped clusters: a chart archive as `helm pull` or `helm package` makes it."""
    subprocess.run([lab.state["tools"]["helm"], "package", str(CHARTS / "keda"), "--destination", str(tmp_path)],
                   check=True, capture_output=True)
    [archive] = tmp_path.glob("keda-*.tgz")
    extra = {"addons_enabled": ["keda"], "addons_keda_release": "keda-archive",
             "addons_keda_namespace": "keda-archive", "addons_keda_chart_path": str(archive)}
    first = runner.run(PLAY, extra_vars=extra)
    assert first.ok, first.explain()
    assert release(kube, "keda-archive", "keda-archive")["info"]["status"] == "deployed"
    again = runner.run(PLAY, extra_vars=extra)
    assert again.ok and again.changed == 0, again.explain()
