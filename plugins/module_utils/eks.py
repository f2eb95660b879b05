# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What dbos.deploy.eks_cluster_info and dbos.deploy.eks_cluster_endpoint share: reading a cluster, its
facts under stable names, and the endpoint-access change to make (the last two without AWS calls)."""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

ENDPOINT_ACCESS_KEYS = {
    "endpoint_public_access": "endpointPublicAccess",
    "endpoint_private_access": "endpointPrivateAccess",
    "public_access_cidrs": "publicAccessCidrs",
}


def describe_cluster(module, client, name):
    """DescribeCluster's ``cluster``, or None when there is no cluster ``name``; any other error fails
    the module."""
    try:
        return client.describe_cluster(name=name)["cluster"]
    except is_boto3_error_code("ResourceNotFoundException"):
        return None
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg=f"Could not describe EKS cluster {name}")


def cluster_facts(cluster):
    """What the next roles need from DescribeCluster's ``cluster``, with stable snake_case names."""
    vpc = cluster.get("resourcesVpcConfig") or {}
    return {
        "name": cluster.get("name"),
        "arn": cluster.get("arn"),
        "status": cluster.get("status"),
        "version": cluster.get("version"),
        "endpoint": cluster.get("endpoint"),
        "certificate_authority_data": (cluster.get("certificateAuthority") or {}).get("data"),
        "vpc_id": vpc.get("vpcId"),
        "subnet_ids": sorted(vpc.get("subnetIds") or []),
        "security_group_ids": sorted(vpc.get("securityGroupIds") or []),
        "cluster_security_group_id": vpc.get("clusterSecurityGroupId"),
        "endpoint_public_access": vpc.get("endpointPublicAccess"),
        "endpoint_private_access": vpc.get("endpointPrivateAccess"),
        "public_access_cidrs": sorted(vpc.get("publicAccessCidrs") or []),
    }


def endpoint_access_update(cluster, wanted):
    """The ``resourcesVpcConfig`` for UpdateClusterConfig that brings the cluster to ``wanted``
    (module parameters; None means leave as is), or None when nothing differs."""
    current = cluster_facts(cluster)
    update = {}
    for param, api_key in ENDPOINT_ACCESS_KEYS.items():
        value = wanted.get(param)
        if value is None:
            continue
        if param == "public_access_cidrs":
            value = sorted(value)
        if current[param] != value:
            update[api_key] = value
    if not update:
        return None
    public = update.get("endpointPublicAccess", current["endpoint_public_access"])
    private = update.get("endpointPrivateAccess", current["endpoint_private_access"])
    if not public and not private:
        raise ValueError("endpoint_public_access and endpoint_private_access cannot both be false: "
                         "the cluster's API server would be unreachable")
    return update
