"""Role dbos.deploy.eks on the lab: what it asks of AWS, its idempotency, its kubeconfig."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import urllib.parse

import pytest
import yaml
from kubernetes import client

from lab.ansible_run import AnsibleRunner
from lab.pytest_plugin import Aws


def eks_play(tmp_path, **overrides) -> list[dict]:
    """A play running the role; an override of None leaves that variable out."""
    role_vars = {"dbos_namespace": "dbos", "eks_kubeconfig_path": str(tmp_path / "kube" / "eks.yaml"),
                 "eks_token_helper_path": str(tmp_path / "kube" / "dbos-eks-token"), **overrides}
    role_vars = {k: v for k, v in role_vars.items() if v is not None}
    return [{"name": "EKS", "hosts": "localhost", "gather_facts": False,
             "roles": [{"role": "dbos.deploy.eks", "vars": role_vars}]}]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("eks")


@pytest.fixture(scope="module")
def converged(lab, workdir):
    """The role run once on an empty AWS; the tests below only read what it made (the tests that
    empty AWS again come last in this file, which runs on one worker: --dist loadfile)."""
    lab.reset_aws()
    first = AnsibleRunner(lab, workdir).run(eks_play(workdir))
    assert first.ok, first.explain()
    return first


def test_second_run_changes_nothing(converged, lab, workdir):
    second = AnsibleRunner(lab, workdir).run(eks_play(workdir))
    assert second.ok, second.explain()
    assert second.changed == 0, [n for n, r in second.tasks() if r.get("changed")]


def test_network_is_two_zones_of_public_and_private_subnets(converged, lab):
    aws = Aws(lab)
    ec2 = aws.client("ec2")
    [vpc] = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": ["dbos-app-cluster-vpc"]}])["Vpcs"]
    assert vpc["CidrBlock"] == "10.42.0.0/16"
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    tags = [{t["Key"]: t["Value"] for t in s["Tags"]} for s in subnets]
    public = [s for s, t in zip(subnets, tags, strict=True) if t["dbos.dev/tier"] == "public"]
    private = [s for s, t in zip(subnets, tags, strict=True) if t["dbos.dev/tier"] == "private"]
    assert sorted(s["CidrBlock"] for s in public) == ["10.42.0.0/20", "10.42.16.0/20"]
    assert sorted(s["CidrBlock"] for s in private) == ["10.42.128.0/19", "10.42.160.0/19"]
    assert len({s["AvailabilityZone"] for s in private}) == 2
    assert {s["AvailabilityZone"] for s in private} == {s["AvailabilityZone"] for s in public}
    for s, t in zip(subnets, tags, strict=True):
        role_tag = "kubernetes.io/role/elb" if s in public else "kubernetes.io/role/internal-elb"
        assert t[role_tag] == "1" and t["kubernetes.io/cluster/dbos-app-cluster"] == "shared"

    [igw] = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}])["InternetGateways"]
    nats = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n["State"] != "deleted"]
    assert [n["SubnetId"] for n in nats] in ([public[0]["SubnetId"]], [public[1]["SubnetId"]])
    routes = {}
    for table in ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["RouteTables"]:
        default = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
        for assoc in table["Associations"]:
            if assoc.get("SubnetId"):
                routes[assoc["SubnetId"]] = default[0].get("GatewayId") or default[0].get("NatGatewayId")
    assert all(routes[s["SubnetId"]] == igw["InternetGatewayId"] for s in public)
    assert all(routes[s["SubnetId"]] == nats[0]["NatGatewayId"] for s in private)


def test_cluster_node_group_and_iam(converged, lab):
    aws = Aws(lab)
    eks, iam = aws.client("eks"), aws.client("iam")
    cluster = eks.describe_cluster(name="dbos-app-cluster")["cluster"]
    assert (cluster["status"], cluster["version"]) == ("ACTIVE", "1.31")
    vpc = cluster["resourcesVpcConfig"]
    assert (vpc["endpointPublicAccess"], vpc["endpointPrivateAccess"]) == (True, True)
    assert len(vpc["subnetIds"]) == 4
    ng = eks.describe_nodegroup(clusterName="dbos-app-cluster", nodegroupName="default")["nodegroup"]
    assert ng["scalingConfig"] == {"minSize": 2, "maxSize": 4, "desiredSize": 2}
    assert ng["instanceTypes"] == ["t3.medium"]
    assert set(ng["subnets"]) < set(vpc["subnetIds"])
    policies = {r: {p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=r)["AttachedPolicies"]}
                for r in ("dbos-app-cluster-cluster", "dbos-app-cluster-node")}
    assert policies == {
        "dbos-app-cluster-cluster": {"AmazonEKSClusterPolicy"},
        "dbos-app-cluster-node": {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                                  "AmazonEC2ContainerRegistryReadOnly"},
    }

    facts = converged.task("Hand the cluster facts on")["ansible_facts"]["eks_cluster"]
    assert facts["security_group_id"] == vpc["clusterSecurityGroupId"]
    assert facts["vpc_id"] == vpc["vpcId"]
    assert sorted(facts["private_subnet_ids"] + facts["public_subnet_ids"]) == sorted(vpc["subnetIds"])


def test_kubeconfig_is_private_and_yields_an_eks_token(converged, lab, workdir):
    path = workdir / "kube" / "eks.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    [user] = doc["users"]
    exec_spec = user["user"]["exec"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": lab.aws["access_key"], "AWS_SECRET_ACCESS_KEY": lab.aws["secret_key"]}
    out = subprocess.run([exec_spec["command"], *exec_spec["args"]], env=env, capture_output=True, text=True,
                         check=True).stdout
    credential = json.loads(out)
    assert credential["kind"] == "ExecCredential"
    token = credential["status"]["token"]
    assert token.startswith("k8s-aws-v1.")
    encoded = token.removeprefix("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    assert parts.netloc == "sts.us-west-2.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Expires"] == ["60"]
    assert query["X-Amz-Credential"][0].startswith(lab.aws["access_key"] + "/")
    assert doc["clusters"][0]["cluster"]["server"].startswith("https://")

    # python3 as the user's PATH finds it, not this machine's venv; and the helper needs nothing but
    # the standard library: the same token without site-packages (-S) or the environment's PYTHON* (-I)
    assert exec_spec["command"] == "python3"
    isolated = subprocess.run([sys.executable, "-I", "-S", *exec_spec["args"]], env=env, capture_output=True,
                              text=True, check=True).stdout
    assert json.loads(isolated)["status"]["token"].startswith("k8s-aws-v1.")


def token_url(out: str) -> dict[str, list[str]]:
    """The query of the presigned URL in an ExecCredential's token."""
    encoded = json.loads(out)["status"]["token"].removeprefix("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)


def test_the_token_helper_assumes_roles_through_sts(converged, lab, workdir, tmp_path):
    """--role-arn, a profile's role_arn with source_profile, and a web identity (IRSA): each signs with
    the temporary credentials STS (the lab's moto) answered, on an interpreter without site-packages."""
    helper = workdir / "kube" / "dbos-eks-token"
    (tmp_path / "config").write_text(
        "[profile base]\n"
        f"aws_access_key_id = {lab.aws['access_key']}\naws_secret_access_key = {lab.aws['secret_key']}\n"
        "[profile deployer]\nrole_arn = arn:aws:iam::123456789012:role/deployer\nsource_profile = base\n")
    (tmp_path / "web-identity").write_text("a-projected-service-account-token")
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_ENDPOINT_URL_STS": lab.aws["endpoint"],
            "AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}
    keys = {"AWS_ACCESS_KEY_ID": lab.aws["access_key"], "AWS_SECRET_ACCESS_KEY": lab.aws["secret_key"]}
    cases = {
        "--role-arn": (["--role-arn", "arn:aws:iam::123456789012:role/deployer"], keys),
        "profile": (["--profile", "deployer"], {}),
        "web identity": ([], {"AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "web-identity"),
                              "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/pod"}),
    }
    for name, (args, env) in cases.items():
        run = subprocess.run([sys.executable, "-I", "-S", str(helper), "--cluster", "dbos-app-cluster",
                              "--region", "us-west-2", *args], env={**base, **env}, capture_output=True, text=True,
                             check=False)
        assert run.returncode == 0, (name, run.stderr)
        query = token_url(run.stdout)
        assert not query["X-Amz-Credential"][0].startswith(lab.aws["access_key"]), name  # the role's, not ours
        assert query["X-Amz-Security-Token"][0], name

    failed = subprocess.run([sys.executable, "-I", "-S", str(helper), "--cluster", "c", "--region", "us-west-2"],
                            env=base, capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("dbos-eks-token: cannot sign for cluster c: no AWS credentials found")


def test_namespace_is_created(converged, kube):
    ns = client.CoreV1Api(kube).read_namespace("dbos")
    assert ns.metadata.labels["app.kubernetes.io/managed-by"] == "dbos.deploy"


def facts_play(tmp_path) -> list[dict]:
    role_vars = eks_play(tmp_path)[0]["roles"][0]["vars"]
    return [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Facts", "ansible.builtin.include_role": {"name": "dbos.deploy.eks", "tasks_from": "facts"},
         "vars": role_vars},
        {"name": "Show", "ansible.builtin.debug": {"var": "eks_cluster"}}]}]


def test_facts_entry_point_reads_back_what_the_role_handed_on(converged, lab, workdir):
    handed_on = converged.task("dbos.deploy.eks : Hand the cluster facts on")["ansible_facts"]["eks_cluster"]
    read_back = AnsibleRunner(lab, workdir).run(facts_play(workdir))
    assert read_back.ok, read_back.explain()
    assert read_back.changed == 0
    facts = read_back.task("Show")["eks_cluster"]
    assert facts == handed_on
    assert facts["endpoint"].startswith("https://") and facts["security_group_id"].startswith("sg-")
    assert len(facts["private_subnet_ids"]) == len(facts["public_subnet_ids"]) == 2


def test_facts_entry_point_without_a_cluster_says_what_to_run(aws, ansible, tmp_path):
    result = ansible.run(facts_play(tmp_path))
    assert not result.ok
    assert "No EKS cluster dbos-app-cluster" in result.explain()
    assert "--tags eks" in result.explain()


def test_check_mode_on_a_fresh_lab_creates_nothing(aws, ansible, tmp_path):
    result = ansible.run(eks_play(tmp_path, dbos_namespace="dbos-check"), check=True)
    assert result.ok, result.explain()
    assert [v["CidrBlock"] for v in aws.client("ec2").describe_vpcs()["Vpcs"]] == ["172.31.0.0/16"]
    assert aws.client("eks").list_clusters()["clusters"] == []
    assert aws.client("iam").list_roles()["Roles"] == []


@pytest.mark.parametrize(("overrides", "named"), [
    ({"eks_node_min_size": 5, "eks_node_max_size": 3}, "eks_node_min_size"),
    ({"eks_node_instance_types": ["huge"]}, "eks_node_instance_types"),
    ({"eks_private_subnet_cidrs": ["10.42.128.0/19"]}, "eks_private_subnet_cidrs"),
    ({"eks_node_max_size": "lots"}, "eks_node_max_size"),
    ({"eks_node_disk_size": "big"}, "eks_node_disk_size"),
    ({"dbos_namespace": "Not_A_Label"}, "dbos_namespace"),
])
def test_bad_input_fails_before_any_aws_call(aws, ansible, tmp_path, overrides, named):
    result = ansible.run(eks_play(tmp_path, **overrides))
    assert not result.ok
    assert named in result.explain()
    assert [v["CidrBlock"] for v in aws.client("ec2").describe_vpcs()["Vpcs"]] == ["172.31.0.0/16"]
    assert aws.client("iam").list_roles()["Roles"] == []


def ready_play(tmp_path) -> list[dict]:
    role_vars = eks_play(tmp_path, dbos_namespace="dbos-ready")[0]["roles"][0]["vars"]
    return [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Ready", "ansible.builtin.include_role": {"name": "dbos.deploy.eks", "tasks_from": "ready"},
         "vars": role_vars},
        {"name": "Show", "ansible.builtin.debug": {"var": "eks_cluster"}}]}]


def test_ready_entry_point_runs_on_its_own(aws, ansible, tmp_path, kube):
    """`tasks_from: ready` in a run of its own, after a run that only requested the cluster: it finds the
    IAM roles, the security group and the cluster in AWS instead of what main registered."""
    requested = ansible.run(eks_play(tmp_path, dbos_namespace="dbos-ready", eks_wait_for_cluster=False))
    assert requested.ok, requested.explain()
    eks = aws.client("eks")
    assert eks.list_nodegroups(clusterName="dbos-app-cluster")["nodegroups"] == []

    ready = ansible.run(ready_play(tmp_path))
    assert ready.ok, ready.explain()
    assert ready.task("Look up the nodes' IAM role")["iam_roles"][0]["role_name"] == "dbos-app-cluster-node"
    ng = eks.describe_nodegroup(clusterName="dbos-app-cluster", nodegroupName="default")["nodegroup"]
    assert ng["nodeRole"] == aws.client("iam").get_role(RoleName="dbos-app-cluster-node")["Role"]["Arn"]
    cluster = eks.describe_cluster(name="dbos-app-cluster")["cluster"]
    facts = ready.task("Show")["eks_cluster"]
    assert (facts["endpoint"], facts["security_group_id"]) == (
        cluster["endpoint"], cluster["resourcesVpcConfig"]["clusterSecurityGroupId"])
    assert yaml.safe_load((tmp_path / "kube" / "eks.yaml").read_text())["clusters"][0]["cluster"]["server"] == \
        cluster["endpoint"]
    assert client.CoreV1Api(kube).read_namespace("dbos-ready").metadata.name == "dbos-ready"

    again = ansible.run(ready_play(tmp_path))
    assert again.ok, again.explain()
    assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_ready_entry_point_without_main_says_what_to_run(aws, ansible, tmp_path):
    result = ansible.run(ready_play(tmp_path))
    assert not result.ok
    assert "No EKS cluster dbos-app-cluster" in result.explain() and "--tags eks" in result.explain()
