"""AWS stand-in: moto in server mode, with two fidelity fixes.

Run as ``python -m lab.aws PORT``. The lab starts it with ``MOTO_IAM_LOAD_MANAGED_POLICIES=true`` so
that AWS managed policies (AmazonEKSClusterPolicy, ...) exist and can be attached to roles.

Each fix makes moto answer the way AWS does where the amazon.aws / community.aws modules depend on it.
Without them the roles would not be idempotent on the lab, although they are on AWS.
"""

from __future__ import annotations

import sys

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


def main(argv: list[str]) -> None:
    port = argv[0]
    fix_nat_gateway_tag_resource_type()
    fix_nodegroup_update_config()
    from moto.server import main as moto_main

    moto_main(["-H", "127.0.0.1", "-p", port])


if __name__ == "__main__":
    main(sys.argv[1:])
