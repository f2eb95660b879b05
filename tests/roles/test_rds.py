"""Role dbos.deploy.rds, with eks, through playbooks/infrastructure.yml on the lab."""

from __future__ import annotations

import json
import re
import sys

import psycopg
import pytest
import yaml
from kubernetes import client

from lab.ansible_run import AnsibleRunner
from lab.core import REPO
from lab.pytest_plugin import Aws
from tests.roles.conftest import controller_mode

INFRASTRUCTURE = REPO / "playbooks" / "infrastructure.yml"


def infra_vars(lab, workdir, **extra) -> dict:
    """The bootstrap in controller mode (from this machine), unless ``extra`` says otherwise: the
    cluster mode, the lab inventory's, is tested by test_cluster_mode_* here and by tests/site."""
    return {**controller_mode(lab), "eks_kubeconfig_path": str(workdir / "kube" / "eks.yaml"),
            "eks_token_helper_path": str(workdir / "kube" / "dbos-eks-token"), **extra}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="module")
def converged(lab, workdir):
    """infrastructure.yml run once on an empty AWS (tests that empty it again come last)."""
    lab.reset_aws()
    result = AnsibleRunner(lab, workdir).run(INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir))
    assert result.ok, result.explain()
    return result


def test_rds_is_requested_before_the_cluster_is_waited_for(converged):
    # the order of the tasks in the play (moto makes a cluster ACTIVE at once, so the lab skips the wait)
    names = [name.split(" : ", 1)[-1] for name, _result in converged.tasks()]
    order = {step: names.index(step) for step in (
        "Request the EKS cluster", "Request the PostgreSQL instance", "Wait for the cluster",
        "Create the managed node group", "Wait for the instance", "Create the application role")}
    assert order["Request the EKS cluster"] < order["Request the PostgreSQL instance"] \
        < order["Wait for the cluster"] < order["Create the managed node group"] \
        < order["Wait for the instance"] < order["Create the application role"]


def test_second_run_changes_nothing(converged, lab, workdir):
    again = AnsibleRunner(lab, workdir).run(INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir))
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_instance_is_private_postgres_16_in_the_private_subnets(converged, lab):
    aws = Aws(lab)
    [db] = aws.client("rds").describe_db_instances(DBInstanceIdentifier="dbos-app-pg")["DBInstances"]
    assert db["PubliclyAccessible"] is False
    assert db["Engine"] == "postgres" and db["EngineVersion"].split(".")[0] == "16"
    assert (db["StorageEncrypted"], db["DeletionProtection"], db["BackupRetentionPeriod"]) == (True, True, 7)
    subnet_ids = [s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]]
    subnets = aws.client("ec2").describe_subnets(SubnetIds=subnet_ids)
    tiers = {t["Value"] for s in subnets["Subnets"] for t in s["Tags"] if t["Key"] == "dbos.dev/tier"}
    assert tiers == {"private"} and len(subnets["Subnets"]) == 2


def test_security_group_admits_only_postgres_from_the_cluster(converged, lab):
    aws = Aws(lab)
    [db] = aws.client("rds").describe_db_instances(DBInstanceIdentifier="dbos-app-pg")["DBInstances"]
    cluster_sg = aws.client("eks").describe_cluster(name="dbos-app-cluster")["cluster"]["resourcesVpcConfig"][
        "clusterSecurityGroupId"]
    [sg_id] = [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]]
    [sg] = aws.client("ec2").describe_security_groups(GroupIds=[sg_id])["SecurityGroups"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [g["GroupId"] for g in p["UserIdGroupPairs"]],
             p["IpRanges"]) for p in sg["IpPermissions"]] == [("tcp", 5432, 5432, [cluster_sg], [])]


def test_database_and_role_exist_and_the_role_logs_in(converged, lab):
    pg = lab.postgres
    url = f"postgresql://dbos_app_role:{pg['app_role_password']}@{pg['host']}:{pg['port']}/dbos_app"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == ("dbos_app_role", "dbos_app")
        flags = conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                             "WHERE rolname = current_user").fetchone()
    assert flags == (False, False, False)


def test_cluster_mode_bootstrap_keeps_passwords_out_of_manifests_and_logs(converged, lab, workdir, kube):
    # without the record of the controller-side bootstrap, the Job bootstraps as on a new database
    client.CoreV1Api(kube).delete_namespaced_config_map("dbos-app-pg-bootstrapped", "dbos")
    run = AnsibleRunner(lab, workdir).run(
        INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir, rds_bootstrap_from="cluster"), verbosity=3,
        json_output=False)
    assert run.ok, run.stdout[-3000:]
    secrets = (lab.postgres["password"], lab.postgres["app_role_password"])
    for secret in secrets:
        assert secret not in run.stdout and secret not in run.stderr

    job = client.BatchV1Api(kube).read_namespaced_job("dbos-app-pg-bootstrap", "dbos")
    container = job.spec.template.spec.containers[0]
    manifest_text = str(container.args) + str(container.command) + str(
        [(e.name, e.value) for e in container.env])
    assert not any(secret in manifest_text for secret in secrets)
    refs = {e.name: e.value_from.secret_key_ref.key for e in container.env if e.value_from}
    assert refs == {"PGPASSWORD": "master-password", "APP_ROLE_PASSWORD": "app-role-password"}
    assert any(c.type == "Complete" for c in job.status.conditions)
    # its container ran psql against the RDS endpoint's name (the lab's PostgreSQL, with TLS) and exited 0
    pods = client.CoreV1Api(kube).list_namespaced_pod("dbos", label_selector="job-name=dbos-app-pg-bootstrap").items
    assert [p.status.container_statuses[0].state.terminated.exit_code for p in pods] == [0]
    env = {e.name: e.value for e in container.env if e.value}
    assert env["PGHOST"].endswith(".rds.amazonaws.com") and env["PGSSLMODE"] == "require"
    core = client.CoreV1Api(kube)
    assert "dbos-app-pg-bootstrap" not in [s.metadata.name for s in core.list_namespaced_secret("dbos").items]
    sql = core.read_namespaced_config_map("dbos-app-pg-bootstrap", "dbos").data["bootstrap.sql"]
    assert "\\getenv app_password APP_ROLE_PASSWORD" in sql
    assert not any(secret in sql for secret in secrets)

    again = AnsibleRunner(lab, workdir).run(INFRASTRUCTURE,
                                            extra_vars=infra_vars(lab, workdir, rds_bootstrap_from="cluster"))
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_a_changed_role_password_is_set_once_and_recorded_only_as_a_keyed_digest(converged, lab, workdir, kube):
    pg = lab.postgres

    def logs_in(password):
        try:
            psycopg.connect(f"postgresql://dbos_app_role:{password}@{pg['host']}:{pg['port']}/dbos_app").close()
        except psycopg.OperationalError:
            return False
        return True

    def record():
        return client.CoreV1Api(kube).read_namespaced_config_map("dbos-app-pg-bootstrapped", "dbos").data

    runner = AnsibleRunner(lab, workdir)
    other = "another-app-role-password"
    before = record()
    try:
        changed = runner.run(INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir, dbos_db_app_role_password=other))
        assert changed.ok, changed.explain()
        assert changed.task("Create the application role")["changed"]
        assert logs_in(other) and not logs_in(pg["app_role_password"])
        after = record()
        assert after["app-role-password-digest"] != before["app-role-password-digest"]
        assert after["app-role-password-digest"].startswith("hmac-sha256:")
        assert other not in json.dumps(after) and pg["app_role_password"] not in json.dumps(after)

        again = runner.run(INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir, dbos_db_app_role_password=other))
        assert again.ok, again.explain()
        assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]

        forced = runner.run(INFRASTRUCTURE, extra_vars=infra_vars(
            lab, workdir, dbos_db_app_role_password=other, rds_update_app_role_password=True))
        assert forced.ok, forced.explain()
        assert not forced.task("Create the application role").get("skipped")  # set again when asked
    finally:
        restored = runner.run(INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir))
        assert restored.ok, restored.explain()
    assert logs_in(pg["app_role_password"]) and record() == before


TEARDOWN = REPO / "playbooks" / "teardown.yml"


def test_teardown_refuses_without_confirmation(converged, lab, workdir):
    refused = AnsibleRunner(lab, workdir).run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "yes"})
    assert not refused.ok
    assert "dbos_teardown_confirm=dbos-app-cluster" in refused.explain()
    assert Aws(lab).client("eks").list_clusters()["clusters"] == ["dbos-app-cluster"]


def test_teardown_leaves_only_the_default_vpc(converged, lab, workdir):
    aws = Aws(lab)
    ecr = aws.client("ecr")
    for repository in ("dbos-app", "dbos-migrate"):  # as the app and migrate roles leave them, with an image
        ecr.create_repository(repositoryName=repository)
        ecr.put_image(repositoryName=repository, imageTag="1", imageManifest=json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "config": {}, "layers": []}))
    runner = AnsibleRunner(lab, workdir)
    result = runner.run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
    assert result.ok, result.explain()
    assert ecr.describe_repositories()["repositories"] == []
    ec2 = aws.client("ec2")
    assert [v["CidrBlock"] for v in ec2.describe_vpcs()["Vpcs"]] == ["172.31.0.0/16"]
    assert aws.client("eks").list_clusters()["clusters"] == []
    assert aws.client("rds").describe_db_instances()["DBInstances"] == []
    assert aws.client("rds").describe_db_subnet_groups()["DBSubnetGroups"] == []
    assert aws.client("iam").list_roles()["Roles"] == []
    assert [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] != "deleted"] == []
    assert ec2.describe_addresses()["Addresses"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    snapshots = aws.client("rds").describe_db_snapshots()["DBSnapshots"]
    assert [re.sub(r"\d{14}$", "<date>", s["DBSnapshotIdentifier"]) for s in snapshots] == ["dbos-app-pg-final-<date>"]

    again = runner.run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_bad_input_fails_before_any_aws_call(aws, ansible, workdir):
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "dbos.deploy.rds", "vars": {
        "dbos_namespace": "dbos", "rds_instance_class": "t3.micro",
        "eks_cluster": {"private_subnet_ids": ["subnet-1"], "vpc_id": "vpc-1", "security_group_id": "sg-1"}}}]}]
    result = ansible.run(play)
    assert not result.ok
    assert "rds_instance_class" in result.explain()
    assert aws.client("rds").describe_db_subnet_groups()["DBSubnetGroups"] == []

    short = ansible.run(play, extra_vars={"rds_instance_class": "db.t4g.micro", "dbos_db_app_role_password": "x"})
    assert not short.ok and "dbos_db_app_role_password" in short.explain()


def test_missing_passwords_fail_before_any_aws_call(aws, ansible, lab, tmp_path):
    """An inventory without the (vaulted) passwords: the argument specs name both."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "dbos_aws_region": lab.aws["region"], "dbos_aws_endpoint_url": lab.aws["endpoint"],
        "dbos_aws_access_key": lab.aws["access_key"], "dbos_aws_secret_key": lab.aws["secret_key"],
        "dbos_kubeconfig": lab.kube["kubeconfig"]}}}}))
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "dbos.deploy.rds", "vars": {
        "dbos_namespace": "dbos",
        "eks_cluster": {"private_subnet_ids": ["subnet-1"], "vpc_id": "vpc-1", "security_group_id": "sg-1"}}}]}]
    result = ansible.run(play, inventory=inventory)
    assert not result.ok
    assert "dbos_db_admin_password" in result.explain() and "dbos_db_app_role_password" in result.explain()
    assert aws.client("rds").describe_db_subnet_groups()["DBSubnetGroups"] == []


def test_check_mode_on_a_fresh_lab_creates_nothing(aws, ansible, lab, workdir):
    result = ansible.run(INFRASTRUCTURE, extra_vars=infra_vars(lab, workdir / "check"), check=True)
    assert result.ok, result.explain()
    assert [v["CidrBlock"] for v in aws.client("ec2").describe_vpcs()["Vpcs"]] == ["172.31.0.0/16"]
    assert aws.client("rds").describe_db_instances()["DBInstances"] == []
    assert aws.client("eks").list_clusters()["clusters"] == []
