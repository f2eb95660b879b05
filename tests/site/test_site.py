"""playbooks/site.yml as users run it, on a lab of its own: the demo (`make demo`: the full site, then
the sample app and dbos.deploy.queue_depth answering), then on the converged lab `--check` (nothing
would change), a re-run with ansible's stock strategy (nothing to change), `--tags app` and
`--tags rds` alone (the facts of the skipped stages read back), and the teardown's refusal."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from urllib.parse import quote, unquote, urlsplit

import psycopg
import pytest
from kubernetes import client, config

from lab.ansible_run import STRATEGIES, AnsibleRunner
from lab.core import REPO, Lab

SITE = REPO / "playbooks" / "site.yml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`python -m lab.demo` (what `make demo` runs) on a fresh lab."""
    workdir = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "lab.demo", "--dir", str(workdir / "lab")], cwd=REPO,
                          capture_output=True, text=True, check=False)
    lab = Lab.load(workdir / "lab")
    yield done, lab, workdir
    lab.down()


def test_demo_converges_the_site_and_shows_the_app_and_the_module(demo):
    done, lab, _ = demo
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    recap = re.search(r"PLAY RECAP.*?localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", out, re.S)
    assert recap and int(recap[1]) > 0  # the first converge made things
    for line in ("EKS cluster     dbos-app-cluster: ACTIVE", "RDS instance    dbos-app-pg: available",
                 "ECR repository", "Deployment      dbos/dbos-app: 2/2 available",
                 "SealedSecret    dbos/dbos-app-db: Synced=True", "ScaledObject    dbos/dbos-app-scaledobject"):
        assert line in out, line
    # the app answered from its pods, through its Service's name, to a client pod in the cluster
    assert "dbos-app-pg-bootstrap" in out and "Completed" in out and "Starting DBOS migrations" in out
    ready = re.findall(r"\n  (dbos-app-\w+-\w+)\s+1/1\s+Running", out)
    assert len(ready) == 2, out[-6000:]
    assert re.search(r'\$ curl http://dbos-app\.dbos\.svc\.cluster\.local:8080/healthz\n    200 \{"status": "ok"', out)
    pods, concurrency, waiting = map(int, re.search(r"(\d) pods x WORKER_CONCURRENCY=(\d) run at once; the other "
                                                    r"(\d+) of 9 wait", out).groups())
    assert waiting == 9 - pods * concurrency
    assert f'200 {{"queue_length": {waiting}, "queue_length_exact": true}}' in out  # /metrics
    # queue_depth through `kubectl port-forward svc/dbos-app`, and from the database, counting what the
    # keda role's triggers count (keda_statuses): the 9 waiting and running
    desired = -(-9 // concurrency)
    assert out.count(f"taskQueue: queue_length=9 desired_replicas={desired}") == 2
    assert lab.postgres["password"] not in out and lab.postgres["app_role_password"] not in out
    assert "make demo-teardown" in out and "-e dbos_teardown_confirm=dbos-app-cluster" in out


def test_check_mode_on_the_converged_site_changes_nothing(demo):
    _, lab, workdir = demo
    result = AnsibleRunner(lab, workdir).run(SITE, check=True)
    assert result.ok, result.explain()
    assert result.changed == 0, [n for n, r in result.tasks() if r.get("changed")]


def test_the_stock_strategy_finds_nothing_to_change_either(demo):
    """ansible.cfg runs the roles with Mitogen's strategy (strategy_plugins/); they do not depend on it."""
    _, lab, workdir = demo
    result = AnsibleRunner(lab, workdir).run(SITE, env={"ANSIBLE_STRATEGY": "linear"})
    assert result.ok, result.explain()
    assert result.changed == 0, [n for n, r in result.tasks() if r.get("changed")]


def stage_alone(demo, tag: str) -> list[str]:
    """Run site.yml with one tag on the converged lab; the tasks that ran (argument validation aside:
    ansible-core tags it "always", so it runs whatever the tags)."""
    _, lab, workdir = demo
    result = AnsibleRunner(lab, workdir).run(SITE, tags=tag)
    assert result.ok, result.explain()
    assert result.changed == 0, [n for n, r in result.tasks() if r.get("changed")]
    return [n for n, _ in result.tasks() if "Validating arguments against arg spec" not in n]


# What site.yml runs of the secrets role when its tag is not selected: its `facts` entry point.
HANDED_ON = "dbos.deploy.secrets : Set the fact secrets_created"


def test_one_stage_alone_reads_the_facts_back(demo):
    names = stage_alone(demo, "app")
    assert "dbos.deploy.rds : Read the instance back" in names
    assert HANDED_ON in names  # the names of the secrets role's Secrets, from its variables
    assert any(n.startswith("dbos.deploy.app : ") for n in names)
    others = ("dbos.deploy.eks", "dbos.deploy.addons", "dbos.deploy.secrets", "dbos.deploy.migrate", "dbos.deploy.keda")
    assert not [n for n in names if n.startswith(others) and n != HANDED_ON]


def test_the_database_stage_alone_reads_the_cluster_back(demo):
    names = stage_alone(demo, "rds")
    eks = [n for n in names if n.startswith("dbos.deploy.eks : ")]
    assert eks == ["dbos.deploy.eks : Read the cluster back", "dbos.deploy.eks : Fail when there is no cluster yet",
                   "dbos.deploy.eks : Read the cluster's subnets back, by tier",
                   "dbos.deploy.eks : Hand the cluster facts on"], eks
    assert not [n for n in names if n.startswith("dbos.deploy.eks : Check ")]  # only the rds stage's inputs
    assert "dbos.deploy.rds : Create the DB subnet group from the private subnets" in names
    others = ("dbos.deploy.addons", "dbos.deploy.secrets", "dbos.deploy.migrate", "dbos.deploy.app", "dbos.deploy.keda")
    assert not [n for n in names if n.startswith(others) and n != HANDED_ON]


def kube_api(lab: Lab):
    return config.new_client_from_config(config_file=lab.kube["kubeconfig"])


def secret_values(lab: Lab) -> dict[str, str]:
    """Every value of the deployment's Secrets, by "secret/key", and the lab's passwords."""
    with kube_api(lab) as api:
        secrets = client.CoreV1Api(api).list_namespaced_secret("dbos").items
    values = {f"{s.metadata.name}/{k}": base64.b64decode(v).decode()
              for s in secrets for k, v in (s.data or {}).items()}
    pg = lab.postgres
    values.update({"admin password": pg["password"], "app role password": pg["app_role_password"],
                   "reader password": pg["queue_reader_password"],
                   "digest key": lab.state["vault"]["secrets_hmac_key"]})
    return values


def leaks(output: str, values: dict[str, str]) -> list[str]:
    """The values found in ``output``: as they are, percent-encoded, or base64-encoded."""
    found = []
    for name, value in values.items():
        for form, text in (("raw", value), ("percent-encoded", quote(value, safe="")),
                           ("base64", base64.b64encode(value.encode()).decode())):
            if len(text) >= 8 and text in output:
                found.append(f"{name} ({form})")
    return found


def test_a_changed_app_role_password_reaches_the_database_the_secret_and_the_pods(demo):
    """The role's password changes in the database, then in the sealed Secret, then the pods roll to read it;
    a second run changes nothing: the same values sealed again give the same keyed digests, so the pods
    stay on their revision. (The site stays on the new password for the tests after this one, which read
    the values from the cluster; it is restored only when this test fails.)"""
    _, lab, workdir = demo
    runner = AnsibleRunner(lab, workdir)
    new_password = "rotated-" + lab.postgres["app_role_password"][::-1]

    def deployment():
        with kube_api(lab) as api:
            return client.AppsV1Api(api).read_namespaced_deployment("dbos-app", "dbos")

    revision_before = deployment().spec.template.metadata.annotations["dbos.dev/secrets-revision"]
    try:
        changed = runner.run(SITE, extra_vars={"dbos_db_app_role_password": new_password})
        assert changed.ok, changed.explain()
        order = [n for n, r in changed.tasks() if r.get("changed")]
        assert order.index("dbos.deploy.rds : Run the bootstrap Job, in place of the previous one") \
            < order.index("dbos.deploy.secrets : Seal the Secrets into files") \
            < order.index("dbos.deploy.app : Apply the Deployment and the Service, and wait for the rollout"), order

        # the URL the pods are given logs in (through the lab's address for the RDS endpoint)
        url = urlsplit(secret_values(lab)["dbos-app-db/database-url"])
        assert unquote(url.password) == new_password
        pg = lab.postgres
        with psycopg.connect(host=pg["host"], port=pg["port"], dbname=url.path.lstrip("/"),
                             user=unquote(url.username), password=unquote(url.password)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("dbos_app_role",)
        # and the pods roll to read it: the new ones are Ready, so DBOS logged in with it
        revision = deployment().spec.template.metadata.annotations["dbos.dev/secrets-revision"]
        assert revision != revision_before
        with kube_api(lab) as api:
            pods = client.CoreV1Api(api).list_namespaced_pod("dbos", label_selector="app.kubernetes.io/name=dbos-app")
        rolled = [p for p in pods.items if p.metadata.annotations.get("dbos.dev/secrets-revision") == revision
                  and p.metadata.deletion_timestamp is None]
        assert rolled and all({c.type: c.status for c in p.status.conditions}["Ready"] == "True" for p in rolled)

        again = runner.run(SITE, extra_vars={"dbos_db_app_role_password": new_password})
        assert again.ok, again.explain()
        assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]
        assert deployment().spec.template.metadata.annotations["dbos.dev/secrets-revision"] == revision
    except BaseException:
        restored = runner.run(SITE)
        assert restored.ok, restored.explain()
        raise


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_retire_and_teardown_show_no_secret_even_at_vvv(demo, strategy):
    """Last: it tears the demo's deployment down, after converging the site again where the other
    strategy's teardown left nothing to delete."""
    _, lab, workdir = demo
    runner = AnsibleRunner(lab, workdir)
    with kube_api(lab) as api:
        torn_down = "dbos" not in [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    if torn_down:
        again = runner.run(SITE)
        assert again.ok, again.explain()
    values = secret_values(lab)
    assert {"postgres-admin/password", "postgres-admin/database-url", "dbos-app-db/database-url"} <= set(values)
    env = STRATEGIES[strategy]
    retire = runner.run(REPO / "playbooks" / "retire.yml", verbosity=3, json_output=False, env=env)
    assert retire.ok, retire.stdout[-3000:]
    teardown = runner.run(REPO / "playbooks" / "teardown.yml", verbosity=3, json_output=False, env=env,
                          extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
    assert teardown.ok, teardown.stdout[-3000:]
    assert retire.verbose_strategy() == teardown.verbose_strategy() == strategy, teardown.stdout[:3000]
    assert "Delete what runs in the namespace" in teardown.stdout  # the Secrets' deletion ran, censored
    assert leaks(retire.stdout + retire.stderr, values) == []
    assert leaks(teardown.stdout + teardown.stderr, values) == []


def test_teardown_refuses_without_confirmation(demo):
    _, lab, workdir = demo
    refused = AnsibleRunner(lab, workdir).run(REPO / "playbooks" / "teardown.yml")
    assert not refused.ok
    assert "-e dbos_teardown_confirm=dbos-app-cluster" in refused.explain()
