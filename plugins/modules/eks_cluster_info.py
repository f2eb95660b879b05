#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: eks_cluster_info
short_description: Read an EKS cluster's connection and network facts
version_added: 0.1.0
description:
  - Reads an EKS cluster (C(DescribeCluster)) and returns what clients and other resources need from
    it, namely the API endpoint, the certificate authority, the VPC, the subnets, the cluster security
    group that EKS created and the endpoint access settings.
  - A cluster that does not exist is not an error; RV(exists) is then false and RV(cluster) is not
    returned. Any other error (credentials, permissions, region) fails the module.
  - Changes nothing. C(community.aws.eks_cluster) creates clusters but cannot read one on its own.
author:
  - dbos.deploy maintainers (!UNKNOWN)
options:
  name:
    description: Name of the EKS cluster.
    type: str
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
  - dbos.deploy.aws
notes:
  - Supports check mode; it reads only, so check mode changes nothing in what it does or returns.
seealso:
  - module: dbos.deploy.eks_cluster_endpoint
  - module: community.aws.eks_cluster
"""

EXAMPLES = r"""
- name: Read the cluster
  dbos.deploy.eks_cluster_info:
    name: dbos-app-cluster
  register: cluster_info

- name: Use its facts
  ansible.builtin.debug:
    msg: "{{ cluster_info.cluster.endpoint }} {{ cluster_info.cluster.cluster_security_group_id }}"
  when: cluster_info.exists

- name: Delete the cluster only if there is one
  community.aws.eks_cluster:
    name: dbos-app-cluster
    state: absent
    wait: true
  when: cluster_info.exists

- name: Connection settings for this and every AWS module of a play
  module_defaults:
    group/dbos.deploy.aws:
      region: us-west-2
      profile: production
  block:
    - name: Read the cluster with them
      dbos.deploy.eks_cluster_info:
        name: dbos-app-cluster
"""

RETURN = r"""
exists:
  description: Whether the cluster exists.
  returned: always
  type: bool
  sample: true
cluster:
  description: The cluster's facts, under stable snake_case names.
  returned: when RV(exists) is true
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
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.dbos.deploy.plugins.module_utils.eks import cluster_facts, describe_cluster


def main():
    module = AnsibleAWSModule(argument_spec=dict(name=dict(type="str", required=True)), supports_check_mode=True)
    cluster = describe_cluster(module, module.client("eks"), module.params["name"])
    if cluster is None:
        module.exit_json(changed=False, exists=False)
    module.exit_json(changed=False, exists=True, cluster=cluster_facts(cluster))


if __name__ == "__main__":
    main()
