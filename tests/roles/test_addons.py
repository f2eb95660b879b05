"""Role dbos.deploy.addons on the lab: helm 3 installs of the lab's local charts (Sealed Secrets' own,
from its Go module; KEDA's, assembled by the lab from the manifests in its Go module), the real
controllers running for their pods, verified the way a user checks them."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess

import pytest
from kubernetes import client

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
    # KEDA's own manifests: no admission webhooks on the lab (lab/kube/keda_chart.py says why)
    assert sorted(d.metadata.name for d in keda.items) == ["keda-metrics-apiserver", "keda-operator"]
    assert all(d.status.available_replicas == 1 for d in sealed.items + keda.items)
    # available because the controllers answer (the lab's runner runs them), and the adapter serves
    # the external metrics API through the aggregation layer
    service = client.ApiregistrationV1Api(kube).read_api_service("v1beta1.external.metrics.k8s.io")
    assert [(c.type, c.status) for c in service.status.conditions] == [("Available", "True")]
    for name, namespace in (("sealed-secrets", "kube-system"), ("keda", "keda")):
        record = release(kube, name, namespace)
        assert record["info"]["status"] == "deployed" and record["chart"]["metadata"]["name"] == name
    waited = converged.task("Wait for the controllers to be available")["results"]
    assert [len(r["resources"]) for r in waited] == [1, 2]


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


def own_cluster_role(release_name: str) -> dict:
    """A second Sealed Secrets release needs a ClusterRole name of its own: the chart's default name
    (secrets-unsealer) belongs to the first release, and helm refuses to take it over."""
    return {"rbac": {"clusterRoleName": f"{release_name}-unsealer"}}


def uninstall(lab, release_name: str, namespace: str) -> None:
    subprocess.run([lab.state["tools"]["helm"], "uninstall", release_name, "-n", namespace, "--wait",
                    "--kubeconfig", lab.kube["kubeconfig"]], capture_output=True, check=False, timeout=120)


def test_controllers_that_never_become_available_fail_the_role_after_the_timeout(converged, runner, lab, kube):
    """A controller whose pod no node takes (a nodeSelector no node matches) never becomes available."""
    extra = {"addons_enabled": ["sealed_secrets"], "dbos_sealed_secrets_controller_name": "stuck",
             "dbos_sealed_secrets_controller_namespace": "stuck", "addons_wait_timeout": 3,
             "addons_sealed_secrets_values": {"nodeSelector": {"lab.dbos.dev/no-such-node": "true"},
                                              **own_cluster_role("stuck")}}
    try:
        stuck = runner.run(PLAY, extra_vars=extra)
        [pod] = client.CoreV1Api(kube).list_namespaced_pod("stuck").items
        assert pod.status.phase == "Pending" and not pod.spec.node_name
    finally:
        uninstall(lab, "stuck", "stuck")
    assert not stuck.ok
    failed = stuck.task("Wait for the controllers to be available")
    assert failed["failed"] and "stuck" in json.dumps(failed)


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
    """Air-gapped clusters: a chart archive as `helm pull` or `helm package` makes it (a second Sealed
    Secrets controller, in a namespace of its own, removed after the test)."""
    subprocess.run([lab.state["tools"]["helm"], "package", lab.state["charts"]["sealed-secrets"], "--destination",
                    str(tmp_path)], check=True, capture_output=True)
    [archive] = tmp_path.glob("sealed-secrets-*.tgz")
    extra = {"addons_enabled": ["sealed_secrets"], "dbos_sealed_secrets_controller_name": "archived",
             "dbos_sealed_secrets_controller_namespace": "archived", "addons_sealed_secrets_chart_path": str(archive),
             "addons_sealed_secrets_values": own_cluster_role("archived")}
    try:
        first = runner.run(PLAY, extra_vars=extra)
        assert first.ok, first.explain()
        assert release(kube, "archived", "archived")["info"]["status"] == "deployed"
        again = runner.run(PLAY, extra_vars=extra)
        assert again.ok and again.changed == 0, again.explain()
    finally:
        uninstall(lab, "archived", "archived")
