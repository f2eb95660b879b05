"""playbooks/site.yml on a fresh lab of its own: bad input is refused before anything is created, whether
it comes as `-e name=value` (a string) or as JSON; and `--check` previews a first run without creating
anything."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab
from lab.kube import clear_discovery_cache
from lab.pytest_plugin import Aws

SITE = REPO / "playbooks" / "site.yml"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A lab nothing has run against, and what it holds when new (the cluster's built-in namespaces)."""
    lab = Lab.up(tmp_path_factory.mktemp("fresh-lab"))
    try:
        clear_discovery_cache(lab.kube["server"])
        api = config.new_client_from_config(config_file=lab.kube["kubeconfig"])
        yield lab, api, inventory_of(lab, api)
        api.close()
    finally:
        lab.down()


def inventory_of(lab: Lab, api) -> dict:
    """Everything the roles could have made: AWS resources in moto, namespaces in the cluster."""
    aws = Aws(lab)
    ec2, rds = aws.client("ec2"), aws.client("rds")
    return {
        "vpcs": sorted(v["CidrBlock"] for v in ec2.describe_vpcs()["Vpcs"]),
        "security_groups": sorted(g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "iam_roles": [r["RoleName"] for r in aws.client("iam").list_roles()["Roles"]],
        "eks_clusters": aws.client("eks").list_clusters()["clusters"],
        "rds_instances": [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]],
        "rds_subnet_groups": [g["DBSubnetGroupName"] for g in rds.describe_db_subnet_groups()["DBSubnetGroups"]],
        "ecr_repositories": [r["repositoryName"] for r in aws.client("ecr").describe_repositories()["repositories"]],
        "namespaces": sorted(n.metadata.name for n in client.CoreV1Api(api).list_namespace().items),
    }


FIRST_PLAY = "Check the inputs of every selected stage, before anything changes"

# (the variable the message must name, its value as `-e name=value` writes it, the same value as JSON)
BAD_INPUTS = [
    ("rds_instance_class", "t3.micro", "t3.micro"),
    ("dbos_worker_concurrency", "0", 0),
    ("dbos_worker_concurrency", "two", "two"),
    ("keda_max_replicas", "-1", -1),
    ("app_image", "nginx", "nginx"),
    ("dbos_namespace", "Bad_NS", "Bad_NS"),
    ("keda_queues", "['_dbos_internal']", ["_dbos_internal"]),
    ("rds_allocated_storage", "5", 5),
    ("dbos_db_admin_password", "", ""),
    ("app_port", "0", 0),
    ("eks_cluster_version", "1.99", "1.99"),
    # numbers compared with each other: "3" > "2" as strings too, but only | int makes it an error, not a crash
    ("eks_node_min_size", "3", 3),
    # relations between roles: the keda role scales the app role's Deployment, on its port
    ("app_name", "another-app", "another-app"),
    ("app_port", "9090", 9090),
]


@pytest.mark.parametrize("given_as", ["string", "json"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[f"{v}={s}" for v, s, _ in BAD_INPUTS])
def test_bad_input_fails_naming_the_variable_before_anything_is_created(fresh, tmp_path, bad, given_as):
    lab, api, new = fresh
    variable, as_string, as_json = bad
    runner = AnsibleRunner(lab, tmp_path)
    if given_as == "string":
        result = runner.run(SITE, extra_args=["-e", f"{variable}={as_string}"])
    else:
        result = runner.run(SITE, extra_vars={variable: as_json})
    assert not result.ok
    messages = result.failure_messages()
    assert messages and any(variable in m for m in messages), result.explain()
    assert not any("not supported between" in m or "Traceback" in m for m in messages), result.explain()
    # it failed in the first play, the inputs check, and nothing exists that a fresh lab did not hold
    assert [p["play"]["name"] for p in result.data["plays"]] == [FIRST_PLAY]
    assert inventory_of(lab, api) == new


@pytest.mark.parametrize("given_as", ["string", "json"])
def test_valid_numbers_given_as_strings_pass_every_check(fresh, tmp_path, given_as):
    """eks_node_min_size=1 is valid: its checks pass, as strings too, and the run gets as far as the
    keda role's checks, which refuse keda_max_replicas=-1 (still before any change)."""
    lab, api, new = fresh
    runner = AnsibleRunner(lab, tmp_path)
    if given_as == "string":
        result = runner.run(SITE, extra_args=["-e", "eks_node_min_size=1", "-e", "eks_node_max_size=3",
                                              "-e", "rds_allocated_storage=30", "-e", "keda_max_replicas=-1"])
    else:
        result = runner.run(SITE, extra_vars={"eks_node_min_size": 1, "eks_node_max_size": 3,
                                              "rds_allocated_storage": 30, "keda_max_replicas": -1})
    assert not result.ok
    failed = [n for n, r in result.tasks() if r.get("failed")]
    assert failed == ["dbos.deploy.keda : Check the replica bounds"], result.explain()
    for check in ("dbos.deploy.eks : Check the node group size", "dbos.deploy.rds : Check the storage"):
        assert result.task(check).get("failed") is not True
    assert inventory_of(lab, api) == new


def test_check_mode_on_a_fresh_lab_reports_the_first_run_and_creates_nothing(fresh, tmp_path):
    lab, api, new = fresh
    result = AnsibleRunner(lab, tmp_path).run(SITE, check=True)
    assert result.ok, result.explain()
    changed = [n for n, r in result.tasks() if r.get("changed")]
    assert "dbos.deploy.eks : Create the VPC" in changed, changed
    assert {"dbos.deploy.eks : Create the control plane's IAM role",
            "dbos.deploy.eks : Create the nodes' IAM role"} <= set(changed), changed
    said = result.task("Say which stages check mode cannot preview")
    assert "addons, secrets, migrate, app and keda" in said["msg"], said
    for role in ("addons", "secrets", "migrate", "app", "keda"):
        ran = [r for n, r in result.tasks() if n.startswith(f"dbos.deploy.{role} : ") and "Validating" not in n
               and not n.startswith(f"dbos.deploy.{role} : Check ")]
        assert ran and all(r.get("skipped") for r in ran), (role, json.dumps(ran)[:500])
    assert inventory_of(lab, api) == new
