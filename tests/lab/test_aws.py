"""The lab's AWS stand-in, driven by the real amazon.aws modules and checked with boto3."""

from __future__ import annotations

AWS_PLAY = {
    "hosts": "localhost",
    "gather_facts": False,
    "module_defaults": {"group/aws": {
        "endpoint_url": "{{ dbos_aws_endpoint_url }}", "region": "{{ dbos_aws_region }}",
        "access_key": "{{ dbos_aws_access_key }}", "secret_key": "{{ dbos_aws_secret_key }}"}},
}


def _cluster_prerequisites(aws, prefix: str) -> tuple[str, str, list[str]]:
    """An IAM role, a VPC and two subnets, what CreateCluster needs: (role ARN, VPC id, subnet ids)."""
    ec2 = aws.client("ec2")
    role = aws.client("iam").create_role(RoleName="lab-eks", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock=f"{prefix}.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"{prefix}.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    return role, vpc, subnets


def test_vpc_from_ec2_vpc_net_is_visible_through_boto3(aws, ansible):
    play = {**AWS_PLAY, "tasks": [{
        "name": "Create the VPC",
        "amazon.aws.ec2_vpc_net": {"name": "lab-smoke", "cidr_block": "10.42.0.0/16",
                                   "tags": {"purpose": "lab-smoke"}},
    }]}
    first = ansible.run([play])
    assert first.ok, first.explain()
    vpc_id = first.task("Create the VPC")["vpc"]["id"]

    vpcs = aws.client("ec2").describe_vpcs(Filters=[{"Name": "tag:purpose", "Values": ["lab-smoke"]}])["Vpcs"]
    assert [(v["VpcId"], v["CidrBlock"]) for v in vpcs] == [(vpc_id, "10.42.0.0/16")]
    assert {"Key": "Name", "Value": "lab-smoke"} in vpcs[0]["Tags"]

    second = ansible.run([play])
    assert second.ok, second.explain()
    assert second.changed == 0


def test_aws_managed_policies_are_loaded(aws):
    policy = aws.client("iam").get_policy(PolicyArn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy")
    assert policy["Policy"]["PolicyName"] == "AmazonEKSClusterPolicy"


def test_nat_gateway_tags_use_the_aws_resource_type(aws):
    """Fidelity fix 1: DescribeTags says 'natgateway', as AWS does (ec2_vpc_nat_gateway relies on it)."""
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.43.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.43.1.0/24")["Subnet"]["SubnetId"]
    eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnet, AllocationId=eip, TagSpecifications=[
        {"ResourceType": "natgateway", "Tags": [{"Key": "Name", "Value": "lab-nat"}]}])["NatGateway"]["NatGatewayId"]

    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [nat]}])["Tags"]
    assert [(t["ResourceType"], t["Key"], t["Value"]) for t in tags] == [("natgateway", "Name", "lab-nat")]


def test_nodegroup_reports_update_config(aws):
    """Fidelity fix 2: a node group created without updateConfig reports AWS's default."""
    eks = aws.client("eks")
    role, _vpc, subnets = _cluster_prerequisites(aws, "10.44")
    eks.create_cluster(name="lab", roleArn=role, resourcesVpcConfig={"subnetIds": subnets})
    eks.create_nodegroup(clusterName="lab", nodegroupName="ng", nodeRole=role, subnets=subnets,
                         scalingConfig={"minSize": 1, "maxSize": 3, "desiredSize": 2})
    eks.create_nodegroup(clusterName="lab", nodegroupName="ng2", nodeRole=role, subnets=subnets,
                         updateConfig={"maxUnavailablePercentage": 50})

    assert eks.describe_nodegroup(clusterName="lab", nodegroupName="ng")["nodegroup"]["updateConfig"] == \
        {"maxUnavailable": 1}
    assert eks.describe_nodegroup(clusterName="lab", nodegroupName="ng2")["nodegroup"]["updateConfig"] == \
        {"maxUnavailablePercentage": 50}


def test_reset_forgets_resources(aws, lab):
    ec2 = aws.client("ec2")
    ec2.create_vpc(CidrBlock="10.45.0.0/16")
    lab.reset_aws()
    assert [v["CidrBlock"] for v in ec2.describe_vpcs()["Vpcs"]] == ["172.31.0.0/16"]  # the default VPC only


def test_eks_cluster_security_group_is_created_kept_and_deleted_like_aws(aws):
    """Fidelity fixes 3 and 4: the cluster security group, and UpdateClusterConfig merging."""
    ec2, eks = aws.client("ec2"), aws.client("eks")
    role, vpc, subnets = _cluster_prerequisites(aws, "10.46")
    eks.create_cluster(name="sg", roleArn=role, resourcesVpcConfig={"subnetIds": subnets})

    config = eks.describe_cluster(name="sg")["cluster"]["resourcesVpcConfig"]
    group_id = config["clusterSecurityGroupId"]
    [group] = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert group["VpcId"] == config["vpcId"] == vpc
    assert {"Key": "aws:eks:cluster-name", "Value": "sg"} in group["Tags"]
    assert (config["endpointPublicAccess"], config["endpointPrivateAccess"]) == (True, False)

    eks.update_cluster_config(name="sg", resourcesVpcConfig={"endpointPrivateAccess": True,
                                                             "endpointPublicAccess": False})
    config = eks.describe_cluster(name="sg")["cluster"]["resourcesVpcConfig"]
    assert (config["endpointPublicAccess"], config["endpointPrivateAccess"]) == (False, True)
    assert config["clusterSecurityGroupId"] == group_id
    assert sorted(config["subnetIds"]) == sorted(subnets)

    eks.delete_cluster(name="sg")
    assert group_id not in [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]]
