"""Role dbos.deploy.secrets (and module dbos.deploy.sealed_secret) on the lab.

The lab runs the real Sealed Secrets controller (lab/kube/runner.py), installed from its own chart by
the addons role: it makes the key, and unseals SealedSecrets into Secrets. The tests also open the
sealed values with that key through a second decryptor written from the controller's source
(tests/unit/plugins/module_utils/sealed_reference.py), to check each scope's label; the npm package
@linode/kubeseal-encrypt (tests/crosscheck) is a third sealing implementation, checked against both.
"""

from __future__ import annotations

import base64
import json
import os
import secrets as random
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client

from lab.ansible_run import STRATEGIES, AnsibleRunner
from lab.core import REPO
from tests.roles.conftest import handed_on
from tests.roles.manifests import validation_errors
from tests.unit.plugins.module_utils.sealed_reference import UnsealError, hybrid_decrypt, load_private_key

PLAY = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.addons", "dbos.deploy.secrets"]}]
CROSSCHECK = REPO / "tests" / "crosscheck"
KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"  # the label of the controller's key Secrets


def value(prefix: str) -> str:
    # characters that a URL must escape, so the URLs' encoding is tested too
    return f"{prefix}-{random.token_hex(8)}/:@?#%+&="


@pytest.fixture(scope="module")
def values():
    return {"dbos_db_admin_password": value("admin"), "dbos_db_app_role_password": value("app"),
            "secrets_conductor_api_key": value("conductor")}


@pytest.fixture(scope="module")
def sealed_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gitops") / "sealed"


@pytest.fixture(scope="module")
def base_vars(lab, values, sealed_dir):
    return {"dbos_namespace": "dbos",
            **handed_on(lab, secrets=False, endpoint="dbos-app-pg.abc.us-east-1.rds.amazonaws.com", port=5432,
                        master_username="postgres"),
            "secrets_sealed_dir": str(sealed_dir), **values}


@pytest.fixture(scope="module")
def converged(runner, namespace, base_vars):
    result = runner.run(PLAY, extra_vars=base_vars)
    assert result.ok, result.explain()
    return result


def secret_data(kube, name: str, namespace: str = "dbos") -> dict[str, str]:
    secret = client.CoreV1Api(kube).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def controller_keys(kube) -> list:
    found = client.CoreV1Api(kube).list_namespaced_secret("kube-system", label_selector=KEY_LABEL).items
    return [load_private_key(base64.b64decode(s.data["tls.key"])) for s in found]


def controller_public_key_pem(kube) -> str:
    [key_secret] = client.CoreV1Api(kube).list_namespaced_secret("kube-system", label_selector=KEY_LABEL).items
    cert = x509.load_pem_x509_certificate(base64.b64decode(key_secret.data["tls.crt"]))
    return cert.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def file_bytes(sealed_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(sealed_dir.glob("*.yaml"))}


def test_the_controller_unseals_the_three_secrets_of_the_guide(converged, kube, values):
    admin, app, key = (values[k] for k in ("dbos_db_admin_password", "dbos_db_app_role_password",
                                           "secrets_conductor_api_key"))
    data = secret_data(kube, "postgres-admin")
    assert set(data) == {"password", "database-url"} and data["password"] == admin
    for name, user, password in (("postgres-admin", "postgres", admin), ("dbos-app-db", "dbos_app_role", app)):
        url = urlsplit(secret_data(kube, name)["database-url"])
        assert (url.scheme, url.username, unquote(url.password), url.hostname, url.port, url.path) == (
            "postgresql", user, password, "dbos-app-pg.abc.us-east-1.rds.amazonaws.com", 5432, "/dbos_app")
        assert parse_qs(url.query) == {"sslmode": ["require"]}
    app_data = secret_data(kube, "dbos-app-db")
    assert set(app_data) == {"password", "database-url"} and app_data["password"] == app
    assert secret_data(kube, "conductor-api-key") == {"api-key": key}
    for name in ("postgres-admin", "dbos-app-db", "conductor-api-key"):
        [owner] = client.CoreV1Api(kube).read_namespaced_secret(name, "dbos").metadata.owner_references
        assert (owner.kind, owner.name, owner.controller) == ("SealedSecret", name, True)


def test_files_hold_only_ciphertext_and_a_keyed_digest(converged, sealed_dir, values, lab):
    files = file_bytes(sealed_dir)
    assert sorted(files) == ["conductor-api-key.yaml", "dbos-app-db.yaml", "postgres-admin.yaml"]
    for name, content in files.items():
        document = yaml.safe_load(content)
        assert (document["kind"], document["metadata"]["name"]) == ("SealedSecret", name.removesuffix(".yaml"))
        recorded = document["metadata"]["annotations"]["dbos.dev/plaintext-hmac"]
        assert recorded.startswith("hmac-sha256:") and len(recorded) == len("hmac-sha256:") + 64
        # nothing in the file, the digest included, can be checked against a value without the vaulted
        # key: the same inputs keyed with anything but dbos_secrets_hmac_key give another digest
        assert lab.state["vault"]["secrets_hmac_key"] not in content.decode()
        assert oct(os.stat(sealed_dir / name).st_mode & 0o777) == "0o644"
        assert validation_errors(document) == []  # against the SealedSecret CRD's schema


def test_values_sealed_by_the_module_open_with_the_controllers_key_in_every_scope(converged, runner, kube, tmp_path):
    probe = value("probe")
    tasks = [{"name": f"Seal for scope {scope}", "dbos.deploy.sealed_secret": {
        "name": "probe", "namespace": "team-a", "scope": scope, "data": {"v": probe},
        "path": str(tmp_path / f"{scope}.yaml"), "digest_key": "{{ dbos_secrets_hmac_key }}",
        "certificate_path": "{{ secrets_controller_cert_file }}"}, "no_log": True}
        for scope in ("strict", "namespace-wide", "cluster-wide")]
    result = runner.run([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    assert result.ok, result.explain()
    keys = controller_keys(kube)
    labels = {"strict": (b"team-a/probe", [b"team-b/probe", b"team-a/other"]),
              "namespace-wide": (b"team-a", [b"team-b", b"team-a/probe"]),
              "cluster-wide": (b"", [])}
    for scope, (right, wrong_ones) in labels.items():
        document = yaml.safe_load((tmp_path / f"{scope}.yaml").read_text())
        blob = base64.b64decode(document["spec"]["encryptedData"]["v"])
        assert hybrid_decrypt(keys, blob, right).decode() == probe
        for wrong in wrong_ones:  # sealed for namespace team-a: nothing opens it under team-b's label
            with pytest.raises(UnsealError):
                hybrid_decrypt(keys, blob, wrong)


def test_a_second_implementation_agrees(converged, kube):
    """@linode/kubeseal-encrypt seals (namespace-wide); the reference decryptor opens it with the
    controller's key, and the controller unseals a SealedSecret made of it into a Secret, as with the
    module's output."""
    probe = value("npm")
    request = json.dumps({"publicKeyPem": controller_public_key_pem(kube), "namespace": "dbos", "value": probe})
    sealed = subprocess.run(["node", str(CROSSCHECK / "seal.mjs")], input=request, capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert hybrid_decrypt(controller_keys(kube), base64.b64decode(sealed), b"dbos").decode() == probe
    with pytest.raises(UnsealError):
        hybrid_decrypt(controller_keys(kube), base64.b64decode(sealed), b"other")

    custom = client.CustomObjectsApi(kube)
    custom.create_namespaced_custom_object("bitnami.com", "v1alpha1", "dbos", "sealedsecrets", {
        "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
        "metadata": {"name": "from-npm", "annotations": {"sealedsecrets.bitnami.com/namespace-wide": "true"}},
        "spec": {"encryptedData": {"v": sealed}, "template": {"metadata": {"name": "from-npm"}}}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            assert secret_data(kube, "from-npm") == {"v": probe}
            break
        except client.ApiException:
            time.sleep(0.5)
    else:
        pytest.fail("the controller did not unseal the npm-sealed SealedSecret")


def test_second_run_changes_nothing_and_files_stay_byte_identical(converged, runner, base_vars, sealed_dir):
    before = file_bytes(sealed_dir)
    again = runner.run(PLAY, extra_vars=base_vars)
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]
    assert file_bytes(sealed_dir) == before

    check = runner.run(PLAY, extra_vars=base_vars, check=True)
    assert check.ok, check.explain()
    assert check.changed == 0
    assert file_bytes(sealed_dir) == before


@pytest.mark.usefixtures("converged")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_verbose_output_and_files_never_show_a_plaintext_value(runner, base_vars, values, sealed_dir, strategy):
    # -vvv, with every value sealed again, so every task that sees one runs in full
    run = runner.run(PLAY, extra_vars={**base_vars, "secrets_force_reseal": True}, verbosity=3, json_output=False,
                     env=STRATEGIES[strategy])
    assert run.ok, run.stdout[-3000:]
    assert run.verbose_strategy() == strategy, run.stdout[:3000]
    assert "Seal the Secrets into files" in run.stdout
    needles = [v for s in values.values() for v in (s, s.split("-", 1)[1].split("/")[0])]
    for needle in needles:
        assert needle not in run.stdout and needle not in run.stderr
    skip = {".git", ".venv", ".tools", ".collections", "node_modules", "build", "__pycache__", ".lab"}
    roots = [REPO, sealed_dir]
    for root in roots:
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = [d for d in subdirs if d not in skip]
            for name in files:
                path = Path(directory) / name
                try:
                    content = path.read_bytes()
                except OSError:
                    continue
                for needle in needles:
                    assert needle.encode() not in content, f"{needle!r} found in {path}"


def test_changing_one_password_reseals_only_that_secret(converged, runner, base_vars, sealed_dir, kube):
    before = file_bytes(sealed_dir)
    new_password = value("app2")
    changed = runner.run(PLAY, extra_vars={**base_vars, "dbos_db_app_role_password": new_password})
    assert changed.ok, changed.explain()
    after = file_bytes(sealed_dir)
    assert [n for n in before if before[n] != after[n]] == ["dbos-app-db.yaml"]
    assert [r.get("changed") for r in changed.task("Seal the Secrets into files")["results"]] == [False, True, False]
    url = urlsplit(secret_data(kube, "dbos-app-db")["database-url"])
    assert unquote(url.password) == new_password  # the role waited for the new generation to be unsealed

    restored = runner.run(PLAY, extra_vars=base_vars)
    assert restored.ok, restored.explain()


def test_without_a_conductor_key_only_the_database_secrets_are_sealed(converged, runner, base_vars):
    result = runner.run(PLAY, check=True, extra_vars={**base_vars, "secrets_conductor_api_key": ""})
    assert result.ok, result.explain()
    assert len(result.task("Seal the Secrets into files")["results"]) == 2


def test_the_module_says_when_it_cannot_get_the_certificate(converged, runner, tmp_path):
    task = {"dbos.deploy.sealed_secret": {"name": "x", "namespace": "dbos", "data": {"k": "v"},
                                          "path": str(tmp_path / "x.yaml"), "controller_name": "missing",
                                          "digest_key": "{{ dbos_secrets_hmac_key }}",
                                          "kubeconfig": "{{ dbos_kubeconfig }}"}}
    result = runner.run([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}])
    assert not result.ok
    msg = result.tasks()[0][1]["msg"]
    assert "kube-system/missing" in msg and "HTTP 404" in msg and "\n" not in msg
    assert not (tmp_path / "x.yaml").exists()


def test_the_module_connects_with_kubernetes_cores_options_and_variables(lab, kube, tmp_path):
    """kubernetes.core's connection options and K8S_AUTH_* variables, each reaching the API server as
    whom it names: the admin (HTTP 404: no such controller), a ServiceAccount without rights (HTTP 403,
    by its name), or nothing (TLS refused, unknown context)."""
    kubeconfig = yaml.safe_load(Path(lab.kube["kubeconfig"]).read_text())
    cluster, user = kubeconfig["clusters"][0]["cluster"], kubeconfig["users"][0]["user"]
    ca_cert = tmp_path / "ca.crt"
    ca_cert.write_bytes(base64.b64decode(cluster["certificate-authority-data"]) if "certificate-authority-data"
                        in cluster else Path(cluster["certificate-authority"]).read_bytes())
    account = f"sealer-{random.token_hex(3)}"
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account("default", {"metadata": {"name": account}})
    api_key = core.create_namespaced_service_account_token(account, "default", {"spec": {}}).status.token
    admin = {"host": cluster["server"], "ca_cert": str(ca_cert), "client_cert": user["client-certificate"],
             "client_key": user["client-key"]}
    sealer = {"host": cluster["server"], "api_key": api_key}
    cases = {  # name: (options, task environment, what the message must say)
        "kubeconfig": ({"kubeconfig": lab.kube["kubeconfig"]}, {}, "HTTP 404"),
        "K8S_AUTH_KUBECONFIG": ({}, {"K8S_AUTH_KUBECONFIG": lab.kube["kubeconfig"]}, "HTTP 404"),
        "host and client certificate": (admin, {}, "HTTP 404"),
        "host and api_key": ({**sealer, "ca_cert": str(ca_cert)}, {}, f"serviceaccount:default:{account}"),
        "validate_certs false": ({**sealer, "validate_certs": False}, {}, f"serviceaccount:default:{account}"),
        "K8S_AUTH_HOST, _API_KEY, _SSL_CA_CERT": (
            {}, {"K8S_AUTH_HOST": sealer["host"], "K8S_AUTH_API_KEY": api_key, "K8S_AUTH_SSL_CA_CERT": str(ca_cert)},
            f"serviceaccount:default:{account}"),
        "no CA to validate with": (sealer, {}, "CERTIFICATE_VERIFY_FAILED"),
        "unknown context": ({"kubeconfig": lab.kube["kubeconfig"], "context": "nowhere"}, {}, "nowhere"),
    }
    tasks = [{"name": name, "dbos.deploy.sealed_secret": {
        "name": "x", "namespace": "dbos", "data": {"k": value("never-sent")}, "path": str(tmp_path / "x.yaml"),
        "controller_name": "missing", "digest_key": "{{ dbos_secrets_hmac_key }}", **options},
        "environment": environment, "ignore_errors": True} for name, (options, environment, _) in cases.items()]
    result = AnsibleRunner(lab, tmp_path).run([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}],
                                              env={"KUBECONFIG": str(tmp_path / "none")})
    messages = {name: result.task(name).get("msg", "") for name in cases}
    for name, (_, _, expected) in cases.items():
        assert expected in messages[name] and "\n" not in messages[name], (name, messages[name])
    assert not (tmp_path / "x.yaml").exists()


def test_missing_passwords_are_refused_by_name(lab, tmp_path, sealed_dir):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "dbos_kubeconfig": lab.kube["kubeconfig"], "dbos_namespace": "dbos",
        "secrets_db_host": "db.example", "secrets_sealed_dir": str(tmp_path / "sealed")}}}}))
    play = [{"hosts": "localhost", "gather_facts": False, "roles": ["dbos.deploy.secrets"]}]
    result = AnsibleRunner(lab, tmp_path).run(play, inventory=inventory)
    assert not result.ok
    assert "dbos_db_admin_password" in result.explain() and "dbos_db_app_role_password" in result.explain()
    assert not (tmp_path / "sealed").exists()


def test_a_namespace_that_does_not_exist_fails_the_apply_except_in_check_mode(converged, runner, base_vars, tmp_path):
    missing = {**base_vars, "dbos_namespace": "no-such-namespace", "secrets_sealed_dir": str(tmp_path / "sealed")}
    preview = runner.run(PLAY, extra_vars=missing, check=True)
    assert preview.ok, preview.explain()
    assert preview.task("Apply the SealedSecrets").get("skipped")  # nothing to preview the apply into

    result = runner.run(PLAY, extra_vars=missing)
    assert not result.ok
    msg = result.task("Apply the SealedSecrets")["msg"]
    assert "no-such-namespace" in msg, msg
