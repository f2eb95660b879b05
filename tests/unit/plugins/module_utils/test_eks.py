"""Unit tests for plugins/module_utils/eks.py."""

import pytest
from ansible_collections.dbos.deploy.plugins.module_utils.eks import (
    cluster_facts,
    describe_cluster,
    endpoint_access_update,
)

CLUSTER = {
    "name": "c", "arn": "arn:aws:eks:us-west-2:123456789012:cluster/c", "status": "ACTIVE", "version": "1.31",
    "endpoint": "https://x.eks.amazonaws.com", "certificateAuthority": {"data": "Q0E="},
    "resourcesVpcConfig": {"subnetIds": ["subnet-b", "subnet-a"], "securityGroupIds": [],
                           "clusterSecurityGroupId": "sg-1", "vpcId": "vpc-1", "endpointPublicAccess": True,
                           "endpointPrivateAccess": False, "publicAccessCidrs": ["0.0.0.0/0"]},
}
UNSET = {"endpoint_public_access": None, "endpoint_private_access": None, "public_access_cidrs": None}


def test_cluster_facts():
    facts = cluster_facts(CLUSTER)
    assert facts["subnet_ids"] == ["subnet-a", "subnet-b"]
    assert (facts["cluster_security_group_id"], facts["vpc_id"], facts["certificate_authority_data"]) == \
        ("sg-1", "vpc-1", "Q0E=")


@pytest.mark.parametrize(("wanted", "update"), [
    ({}, None),
    ({"endpoint_public_access": True}, None),
    ({"public_access_cidrs": ["0.0.0.0/0"]}, None),
    ({"endpoint_private_access": True}, {"endpointPrivateAccess": True}),
    ({"endpoint_private_access": True, "endpoint_public_access": False},
     {"endpointPrivateAccess": True, "endpointPublicAccess": False}),
    ({"public_access_cidrs": ["203.0.113.0/24", "198.51.100.0/24"]},
     {"publicAccessCidrs": ["198.51.100.0/24", "203.0.113.0/24"]}),
])
def test_endpoint_access_update(wanted, update):
    assert endpoint_access_update(CLUSTER, {**UNSET, **wanted}) == update


def test_both_endpoints_off_is_refused():
    with pytest.raises(ValueError, match="cannot both be false"):
        endpoint_access_update(CLUSTER, {**UNSET, "endpoint_public_access": False})


class Module:
    """What describe_cluster asks of an AnsibleAWSModule: fail_json_aws, which ends the module."""

    class Failed(Exception):
        pass

    def fail_json_aws(self, exception, msg):
        raise self.Failed(msg, exception)


@pytest.fixture
def stubbed_eks():
    """A real botocore EKS client whose answers come from botocore's Stubber."""
    import botocore.session
    from botocore.stub import Stubber

    client = botocore.session.Session().create_client("eks", region_name="us-west-2", aws_access_key_id="a",
                                                      aws_secret_access_key="b")
    with Stubber(client) as stubber:
        yield client, stubber


def test_describe_cluster_returns_the_cluster_or_none(stubbed_eks):
    client, stubber = stubbed_eks
    stubber.add_response("describe_cluster", {"cluster": {"name": "c", "status": "ACTIVE"}}, {"name": "c"})
    stubber.add_client_error("describe_cluster", "ResourceNotFoundException", "No cluster found for name: d.",
                             404, expected_params={"name": "d"})
    assert describe_cluster(Module(), client, "c") == {"name": "c", "status": "ACTIVE"}
    assert describe_cluster(Module(), client, "d") is None


def test_describe_cluster_fails_on_other_errors(stubbed_eks):
    client, stubber = stubbed_eks
    stubber.add_client_error("describe_cluster", "AccessDeniedException", "not allowed", 403)
    with pytest.raises(Module.Failed, match="Could not describe EKS cluster c"):
        describe_cluster(Module(), client, "c")
