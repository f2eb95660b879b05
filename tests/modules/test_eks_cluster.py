"""dbos.deploy.eks_cluster_info and dbos.deploy.eks_cluster_endpoint against the lab's moto, connected
through module_defaults for group/dbos.deploy.aws (the collection's action group)."""

from __future__ import annotations

import subprocess

import pytest

from lab.ansible_run import ANSIBLE_PLAYBOOK, AnsibleRunner

CONNECTION = {"region": "{{ dbos_aws_region }}", "endpoint_url": "{{ dbos_aws_endpoint_url }}",
              "access_key": "{{ dbos_aws_access_key }}", "secret_key": "{{ dbos_aws_secret_key }}"}


def play(*tasks: dict) -> list[dict]:
    """One play of ``tasks``, whose failures do not stop it, connected as the roles connect."""
    return [{"hosts": "localhost", "gather_facts": False,
             "module_defaults": {"group/dbos.deploy.aws": CONNECTION},
             "tasks": [{"ignore_errors": True, **t} for t in tasks]}]


@pytest.fixture
def cluster(aws):
    """A cluster in a VPC of two subnets, made with boto3 (the module under test only reads or updates it)."""
    ec2, eks = aws.client("ec2"), aws.client("eks")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"] for i in (0, 1)]
    group = ec2.create_security_group(GroupName="extra", Description="extra", VpcId=vpc)["GroupId"]
    eks.create_cluster(name="probe", version="1.31", roleArn="arn:aws:iam::123456789012:role/probe",
                       resourcesVpcConfig={"subnetIds": subnets, "securityGroupIds": [group]})
    return eks.describe_cluster(name="probe")["cluster"]


def test_info_reports_a_missing_cluster_without_failing(aws, ansible):
    tasks = [{"name": "Read", "dbos.deploy.eks_cluster_info": {"name": "nowhere"}}]
    for check in (False, True):
        result = ansible.run(play(*tasks), check=check)
        assert result.ok, result.explain()
        read = result.task("Read")
        assert (read.get("failed", False), read["changed"], read["exists"]) == (False, False, False)
        assert "cluster" not in read


def test_info_returns_the_clusters_facts(cluster, ansible):
    result = ansible.run(play({"name": "Read", "dbos.deploy.eks_cluster_info": {"name": "probe"}}), check=True)
    assert result.ok, result.explain()
    read = result.task("Read")
    vpc = cluster["resourcesVpcConfig"]
    assert (read["exists"], read["changed"]) == (True, False)
    assert read["cluster"] == {
        "name": "probe", "arn": cluster["arn"], "status": "ACTIVE", "version": "1.31",
        "endpoint": cluster["endpoint"], "certificate_authority_data": cluster["certificateAuthority"]["data"],
        "vpc_id": vpc["vpcId"], "subnet_ids": sorted(vpc["subnetIds"]), "security_group_ids": vpc["securityGroupIds"],
        "cluster_security_group_id": vpc["clusterSecurityGroupId"], "endpoint_public_access": True,
        "endpoint_private_access": False, "public_access_cidrs": ["0.0.0.0/0"],
    }


def test_info_fails_on_errors_other_than_a_missing_cluster(aws, ansible):
    # nothing listens there: a connection error, not "no such cluster"
    task = {"name": "Read", "dbos.deploy.eks_cluster_info": {"name": "probe", "endpoint_url": "http://127.0.0.1:9"}}
    result = ansible.run(play(task))
    read = result.task("Read")
    assert read["failed"] and "Could not describe EKS cluster probe" in read["msg"]


def test_endpoint_sets_access_in_check_mode_and_for_real(cluster, aws, ansible):
    change = {"name": "probe", "endpoint_private_access": True, "public_access_cidrs": ["203.0.113.0/24"],
              "wait": False}
    checked = ansible.run(play({"name": "Set", "dbos.deploy.eks_cluster_endpoint": change}), check=True,
                          extra_args=["--diff"])
    assert checked.ok, checked.explain()
    preview = checked.task("Set")
    assert preview["changed"] and preview["update"] == {"endpointPrivateAccess": True,
                                                        "publicAccessCidrs": ["203.0.113.0/24"]}
    assert preview["diff"]["after"] == {"endpoint_public_access": True, "endpoint_private_access": True,
                                        "public_access_cidrs": ["203.0.113.0/24"]}
    assert aws.client("eks").describe_cluster(name="probe")["cluster"]["resourcesVpcConfig"][
        "endpointPrivateAccess"] is False

    result = ansible.run(play({"name": "Set", "dbos.deploy.eks_cluster_endpoint": change},
                              {"name": "Again", "dbos.deploy.eks_cluster_endpoint": change}))
    assert result.ok, result.explain()
    assert result.task("Set")["changed"] and not result.task("Again")["changed"]
    assert result.task("Set")["cluster"]["endpoint_private_access"] is True
    vpc = aws.client("eks").describe_cluster(name="probe")["cluster"]["resourcesVpcConfig"]
    assert (vpc["endpointPrivateAccess"], vpc["publicAccessCidrs"]) == (True, ["203.0.113.0/24"])


def test_endpoint_refuses_what_it_cannot_do(cluster, ansible):
    result = ansible.run(play(
        {"name": "Missing", "dbos.deploy.eks_cluster_endpoint": {"name": "nowhere", "endpoint_private_access": True}},
        {"name": "Nothing to set", "dbos.deploy.eks_cluster_endpoint": {"name": "probe"}},
        {"name": "Both off", "dbos.deploy.eks_cluster_endpoint": {"name": "probe", "endpoint_public_access": False}},
    ))
    assert "EKS cluster nowhere does not exist" in result.task("Missing")["msg"]
    assert "one of the following is required: endpoint_public_access" in result.task("Nothing to set")["msg"]
    assert "cannot both be false" in result.task("Both off")["msg"]


@pytest.mark.parametrize("module", ["eks_cluster_info", "eks_cluster_endpoint"])
def test_ansible_doc_is_the_manual(module, lab, tmp_path):
    ansible_doc = ANSIBLE_PLAYBOOK.replace("ansible-playbook", "ansible-doc")
    env = AnsibleRunner(lab, tmp_path).env(json_output=False)
    shown = subprocess.run([ansible_doc, f"dbos.deploy.{module}"], env=env, capture_output=True, text=True,
                           check=True).stdout
    assert "RETURN VALUES" in shown and "EXAMPLES" in shown and "group/dbos.deploy.aws" in shown
