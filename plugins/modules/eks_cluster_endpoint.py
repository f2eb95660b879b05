#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: eks_cluster_endpoint
short_description: Set an EKS cluster's API endpoint access and return the cluster's connection facts
version_added: 0.1.0
description:
  - Reads an existing EKS cluster and returns what clients and other resources need from it, namely
    the API endpoint, the certificate authority, the VPC, the subnets and the cluster security group
    that EKS created.
  - When O(endpoint_public_access), O(endpoint_private_access) or O(public_access_cidrs) differ
    from the cluster's settings, updates them (C(UpdateClusterConfig)) and, with O(wait), waits
    until the cluster is C(ACTIVE) again.
  - C(community.aws.eks_cluster) creates clusters but neither sets endpoint access nor describes
    a cluster on its own; this module does both.
author:
  - dbos.deploy maintainers (!UNKNOWN)
options:
  name:
    description: Name of the EKS cluster. It must exist.
    type: str
    required: true
  endpoint_public_access:
    description:
      - Whether the API server is reachable from the internet (restricted by O(public_access_cidrs)).
      - Unset leaves the setting as it is.
    type: bool
  endpoint_private_access:
    description:
      - Whether the API server is reachable from inside the VPC (nodes then use the private endpoint).
      - Unset leaves the setting as it is. Public and private access cannot both be off.
    type: bool
  public_access_cidrs:
    description:
      - CIDR blocks allowed to reach the public endpoint. Unset leaves the setting as it is.
    type: list
    elements: str
  wait:
    description: After an update, wait until the cluster is C(ACTIVE) again.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait with O(wait).
    type: int
    default: 1200
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - Supports check mode (reports the change it would make) and diff mode.
  - Part of the C(aws) action group, so C(module_defaults) for C(group/aws) apply to it.
"""

EXAMPLES = r"""
- name: Private and public endpoint, public only from the office
  dbos.deploy.eks_cluster_endpoint:
    name: dbos-app-cluster
    endpoint_private_access: true
    endpoint_public_access: true
    public_access_cidrs: [203.0.113.0/24]
  register: cluster

- name: Only read the cluster's facts
  dbos.deploy.eks_cluster_endpoint:
    name: dbos-app-cluster
  register: cluster

- name: Use them
  ansible.builtin.debug:
    msg: "{{ cluster.cluster.endpoint }} {{ cluster.cluster.cluster_security_group_id }}"
"""

RETURN = r"""
cluster:
  description: The cluster after any update.
  returned: always
  type: dict
  contains:
    name:
      description: Cluster name.
      type: str
      sample: dbos-app-cluster
    arn:
      description: Cluster ARN.
      type: str
    status:
      description: Cluster status (C(ACTIVE), C(UPDATING), ...).
      type: str
      sample: ACTIVE
    version:
      description: Kubernetes version.
      type: str
      sample: "1.31"
    endpoint:
      description: API server URL.
      type: str
      sample: https://0123456789ABCDEF.gr7.us-west-2.eks.amazonaws.com
    certificate_authority_data:
      description: Base64-encoded PEM of the cluster's certificate authority.
      type: str
    vpc_id:
      description: VPC of the cluster.
      type: str
    subnet_ids:
      description: Subnets of the cluster, sorted.
      type: list
      elements: str
    security_group_ids:
      description: Additional security groups given at creation, sorted.
      type: list
      elements: str
    cluster_security_group_id:
      description: The security group EKS created for the control plane and managed nodes.
      type: str
      sample: sg-0123456789abcdef0
    endpoint_public_access:
      description: Whether the public endpoint is on.
      type: bool
    endpoint_private_access:
      description: Whether the private endpoint is on.
      type: bool
    public_access_cidrs:
      description: CIDR blocks allowed on the public endpoint, sorted.
      type: list
      elements: str
update:
  description: The C(resourcesVpcConfig) sent to UpdateClusterConfig (or that would be, in check mode).
  returned: changed
  type: dict
  sample: {"endpointPrivateAccess": true}
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.dbos.deploy.plugins.module_utils.eks import cluster_facts, endpoint_access_update


def main():
    module = AnsibleAWSModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            endpoint_public_access=dict(type="bool"),
            endpoint_private_access=dict(type="bool"),
            public_access_cidrs=dict(type="list", elements="str"),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=1200),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    client = module.client("eks")
    try:
        cluster = client.describe_cluster(name=name)["cluster"]
    except is_boto3_error_code("ResourceNotFoundException"):
        module.fail_json(msg=f"EKS cluster {name} does not exist: create it first (community.aws.eks_cluster)")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg=f"Could not describe EKS cluster {name}")

    try:
        update = endpoint_access_update(cluster, module.params)
    except ValueError as e:
        module.fail_json(msg=str(e))
    if update is None:
        module.exit_json(changed=False, cluster=cluster_facts(cluster))

    before = cluster_facts(cluster)
    if not module.check_mode:
        try:
            client.update_cluster_config(name=name, resourcesVpcConfig=update)
            if module.params["wait"]:
                delay = 20
                client.get_waiter("cluster_active").wait(name=name, WaiterConfig={
                    "Delay": delay, "MaxAttempts": max(1, module.params["wait_timeout"] // delay)})
            cluster = client.describe_cluster(name=name)["cluster"]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError,
                botocore.exceptions.WaiterError) as e:
            module.fail_json_aws(e, msg=f"Could not update the endpoint access of EKS cluster {name}")
    after = cluster_facts(cluster)
    module.exit_json(changed=True, cluster=after, update=update, diff={
        "before": {k: before[k] for k in ("endpoint_public_access", "endpoint_private_access", "public_access_cidrs")},
        "after": {k: update.get(api, before[k]) for k, api in (
            ("endpoint_public_access", "endpointPublicAccess"), ("endpoint_private_access", "endpointPrivateAccess"),
            ("public_access_cidrs", "publicAccessCidrs"))},
    })


if __name__ == "__main__":
    main()
