"""AWS stand-in: moto in server mode, with two fidelity fixes.

Run as ``python -m lab.aws PORT``. The lab starts it with ``MOTO_IAM_LOAD_MANAGED_POLICIES=true`` so
that AWS managed policies (AmazonEKSClusterPolicy, ...) exist and can be attached to roles.

Each fix makes moto answer the way AWS does where the roles or the amazon.aws / community.aws modules
depend on it. Without them the roles would not be idempotent on the lab, or would have to special-case
it, although they are neither on AWS.
"""

from __future__ import annotations

import sys
import zlib

DEFAULT_REGION = "us-west-2"
# Long on purpose: Ansible's no_log masks every occurrence of a secret in the output, so a short dummy
# secret would be masked inside resource ids ("subne********") and corrupt registered results.
ACCESS_KEY = "AKIALABLABLABLABLAB0"
SECRET_KEY = "lab-secret-key-that-is-long-enough-to-never-appear-in-an-id"


def fix_nat_gateway_tag_resource_type() -> None:
    """AWS DescribeTags reports a NAT gateway's tags with ``resource-type: natgateway``; moto says
    ``nat-gateway``. amazon.aws.ec2_vpc_nat_gateway filters tags on AWS's name, finds none, and
    re-tags the gateway on every run (changed=true forever)."""
    import moto.ec2.utils as ec2_utils

    ec2_utils.EC2_PREFIX_TO_RESOURCE["nat"] = "natgateway"


def fix_nodegroup_update_config() -> None:
    """AWS CreateNodegroup stores ``updateConfig`` (default ``{"maxUnavailable": 1}``) and returns it
    from DescribeNodegroup; moto drops it. community.aws.eks_nodegroup reads
    ``nodegroup["updateConfig"]`` when the node group exists, so its second run fails with KeyError."""
    from moto.eks.responses import EKSResponse

    original = EKSResponse.create_nodegroup

    def create_nodegroup(self):
        result = original(self)
        nodegroup = self.eks_backend.describe_nodegroup(
            cluster_name=self._get_param("name"), nodegroup_name=self._get_param("nodegroupName"))
        nodegroup.update_config = self._get_param("updateConfig") or {"maxUnavailable": 1}
        return result

    EKSResponse.create_nodegroup = create_nodegroup


def fix_eks_cluster_security_group() -> None:
    """AWS creates a security group for every EKS cluster ("eks-cluster-sg-NAME-ID", tagged
    ``aws:eks:cluster-name``), attaches it to the control plane and the managed nodes, reports it as
    ``resourcesVpcConfig.clusterSecurityGroupId`` with the ``vpcId``, and deletes it with the
    cluster. moto does none of this; the rds role opens PostgreSQL to exactly that group.
    AWS also reports its endpoint-access defaults, which moto omits."""
    from moto.ec2.models import ec2_backends
    from moto.eks.models import EKSBackend

    create, delete = EKSBackend.create_cluster, EKSBackend.delete_cluster

    def create_cluster(self, name, role_arn, resources_vpc_config, *args, **kwargs):
        cluster = create(self, name, role_arn, resources_vpc_config, *args, **kwargs)
        ec2 = ec2_backends[self.account_id][self.region_name]
        config = dict(cluster.resources_vpc_config or {})
        vpc_id = ec2.get_subnet(config["subnetIds"][0]).vpc_id if config.get("subnetIds") else None
        group = ec2.create_security_group(
            name=f"eks-cluster-sg-{name}-{zlib.crc32(cluster.arn.encode())}",
            description="EKS created security group applied to ENI that is attached to EKS Control Plane "
                        "master nodes, as well as any managed workloads.",
            vpc_id=vpc_id, tags={"aws:eks:cluster-name": name, "Name": f"eks-cluster-sg-{name}"})
        config.setdefault("endpointPublicAccess", True)
        config.setdefault("endpointPrivateAccess", False)
        config.setdefault("publicAccessCidrs", ["0.0.0.0/0"])
        config.update(clusterSecurityGroupId=group.id, vpcId=vpc_id)
        cluster.resources_vpc_config = config
        return cluster

    def delete_cluster(self, name):
        group_id = (self.clusters[name].resources_vpc_config or {}).get("clusterSecurityGroupId") \
            if name in self.clusters else None
        cluster = delete(self, name)
        if group_id:
            ec2_backends[self.account_id][self.region_name].delete_security_group(group_id=group_id)
        return cluster

    EKSBackend.create_cluster, EKSBackend.delete_cluster = create_cluster, delete_cluster


def fix_update_cluster_config_merges() -> None:
    """AWS UpdateClusterConfig changes only the endpoint-access settings it is given; moto replaces
    the whole VPC configuration, losing the subnets and the cluster security group."""
    from moto.eks.models import EKSBackend

    update = EKSBackend.update_cluster_config

    def update_cluster_config(self, name, resources_vpc_config, *args, **kwargs):
        if resources_vpc_config and name in self.clusters:
            resources_vpc_config = {**(self.clusters[name].resources_vpc_config or {}), **resources_vpc_config}
        return update(self, name, resources_vpc_config, *args, **kwargs)

    EKSBackend.update_cluster_config = update_cluster_config


def fix_nodegroup_tags() -> None:
    """AWS TagResource, UntagResource and ListTagsForResource work on node groups as on clusters;
    moto handles clusters only and answers NotFound for a node group's ARN, which
    community.aws.eks_nodegroup asks for when the node group exists (its second run fails)."""
    from moto.eks.models import EKSBackend

    def nodegroup(backend, arn):
        for cluster in backend.clusters.values():
            for group in cluster.nodegroups.values():
                if group.arn == arn:
                    return group
        return None

    tag, untag, list_tags = EKSBackend.tag_resource, EKSBackend.untag_resource, EKSBackend.list_tags_for_resource

    def tag_resource(self, resource_arn, tags):
        group = nodegroup(self, resource_arn)
        return group.tags.update(tags) if group else tag(self, resource_arn, tags)

    def untag_resource(self, resource_arn, tag_keys):
        group = nodegroup(self, resource_arn)
        if not group:
            return untag(self, resource_arn, tag_keys)
        for key in tag_keys if isinstance(tag_keys, list) else [tag_keys]:
            group.tags.pop(key, None)
        return None

    def list_tags_for_resource(self, resource_arn):
        group = nodegroup(self, resource_arn)
        return group.tags if group else list_tags(self, resource_arn)

    EKSBackend.tag_resource, EKSBackend.untag_resource = tag_resource, untag_resource
    EKSBackend.list_tags_for_resource = list_tags_for_resource


def main(argv: list[str]) -> None:
    port = argv[0]
    fix_nat_gateway_tag_resource_type()
    fix_nodegroup_update_config()
    fix_eks_cluster_security_group()
    fix_update_cluster_config_merges()
    fix_nodegroup_tags()
    from moto.server import main as moto_main

    moto_main(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main(sys.argv[1:])
