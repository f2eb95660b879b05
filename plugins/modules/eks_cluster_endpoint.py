#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: eks_cluster_endpoint
short_description: Set an EKS cluster's API endpoint access
version_added: 0.1.0
description:
  - Sets who can reach an existing EKS cluster's API server. When O(endpoint_public_access),
    O(endpoint_private_access) or O(public_access_cidrs) differ from the cluster's settings, updates
    them (C(UpdateClusterConfig)) and, with O(wait), waits until the cluster is C(ACTIVE) again.
    Options left unset keep the cluster's setting; at least one must be set.
  - Returns the cluster as it is after the update, with the same keys as M(dbos.deploy.eks_cluster_info).
  - To read a cluster, changing nothing, use M(dbos.deploy.eks_cluster_info).
  - C(community.aws.eks_cluster) creates clusters but does not set endpoint access; this module does.
author:
  - dbos.deploy maintainers (!UNKNOWN)
options:
  name:
    description: Name of the EKS cluster. It must exist (the module fails otherwise).
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
  - dbos.deploy.aws
notes:
  - Supports check mode (reports the change it would make) and diff mode.
seealso:
  - module: dbos.deploy.eks_cluster_info
  - module: community.aws.eks_cluster
"""

EXAMPLES = r"""
- name: Private and public endpoint, public only from the office
  dbos.deploy.eks_cluster_endpoint:
    name: dbos-app-cluster
    endpoint_private_access: true
    endpoint_public_access: true
    public_access_cidrs: [203.0.113.0/24]
  register: cluster

- name: Use the cluster it returns
  ansible.builtin.debug:
    msg: "{{ cluster.cluster.endpoint }} is open to {{ cluster.cluster.public_access_cidrs | join(', ') }}"

- name: Turn the public endpoint off (only nodes and machines inside the VPC reach the API server)
  dbos.deploy.eks_cluster_endpoint:
    name: dbos-app-cluster
    endpoint_private_access: true
    endpoint_public_access: false
"""

RETURN = r"""
cluster:
  description:
    - The cluster after the update (before it, in check mode), with the same keys as the
      RV(dbos.deploy.eks_cluster_info#module:cluster) of M(dbos.deploy.eks_cluster_info).
  returned: success
  type: dict
  sample: {"name": "dbos-app-cluster", "status": "ACTIVE", "endpoint_public_access": true,
           "endpoint_private_access": true, "public_access_cidrs": ["203.0.113.0/24"]}
"""

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.dbos.deploy.plugins.module_utils.eks import (
    ENDPOINT_ACCESS_KEYS,
    cluster_facts,
    describe_cluster,
    endpoint_access_update,
)


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
        required_one_of=[list(ENDPOINT_ACCESS_KEYS)],
        supports_check_mode=True,
    )
    name = module.params["name"]
    client = module.client("eks")
    cluster = describe_cluster(module, client, name)
    if cluster is None:
        module.fail_json(msg=f"EKS cluster {name} does not exist: create it first (community.aws.eks_cluster)")

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
    module.exit_json(changed=True, cluster=cluster_facts(cluster), update=update, diff={
        "before": {k: before[k] for k in ENDPOINT_ACCESS_KEYS},
        "after": {k: update.get(api, before[k]) for k, api in ENDPOINT_ACCESS_KEYS.items()},
    })


if __name__ == "__main__":
    main()
