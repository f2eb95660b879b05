#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: job_run
short_description: Run a one-off Kubernetes Job to its end and return its log
version_added: 0.1.0
description:
  - Creates a C(batch/v1) Job from O(definition), waits until it is C(Complete) or C(Failed), and reads
    the logs of its pods (every container, through the API's pod log endpoint, as C(kubectl logs) does).
  - Succeeds with the log when the Job is C(Complete). Fails when the Job is C(Failed), with the reason
    and message of its C(Failed) condition, its pods' exit codes and their log in the failure message;
    and when it does not finish within O(timeout) seconds, with the log so far (the Job is then left
    running, for a later run with O(replace) to delete).
  - With O(replace) (the default), an earlier Job of the same name is deleted first, its pods before it
    (C(propagationPolicy=Foreground)), and the module waits until it is gone, so that no pod of an
    earlier run is still at work when the new one starts. Without it, an existing Job of that name is
    not touched; its run is waited for and reported as this run's (whatever its spec).
  - Every run of a Job this module creates reports C(changed). Whether a Job needs to run at all is the
    caller's decision (a C(when) on a record of the last run, for example); the filter
    P(dbos.deploy.job_outcome#filter) reads how an existing Job ended.
  - Connects as the C(kubernetes.core) modules do, with the same options and environment variables;
    it is in the action group C(dbos.deploy.k8s), which extends C(kubernetes.core.k8s), so one
    C(module_defaults) entry for C(group/dbos.deploy.k8s) sets the connection of both.
author:
  - dbos.deploy maintainers (!UNKNOWN)
requirements:
  - kubernetes >= 24.2.0
  - PyYAML >= 3.11
options:
  definition:
    description:
      - The Job, as an object (C(apiVersion) C(batch/v1), C(kind) C(Job), a C(metadata.name)), as a role
        renders it from its template with
        C(lookup('ansible.builtin.template', 'job.yaml.j2') | ansible.builtin.from_yaml).
      - C(generateName) is not supported, since an earlier run is found by its name.
      - The Job is created with the API's strict field validation, C(fieldValidation=Strict). A field
        the API does not know, or one given twice, fails the run before anything is made, and the
        message names it.
    type: dict
    required: true
  namespace:
    description: The Job's namespace when O(definition) has no C(metadata.namespace).
    type: str
  replace:
    description:
      - Delete an earlier Job of the same name (finished or not) and wait until it and its pods are gone,
        then create the Job.
      - If false, an existing Job of that name is waited for and reported instead (C(changed=false)).
    type: bool
    default: true
  timeout:
    description:
      - Seconds the whole run may take, an earlier Job's deletion included.
    type: float
    default: 300
  poll_interval:
    description: Seconds between two reads of the Job while it runs.
    type: float
    default: 1
  hide:
    description:
      - Values that never appear in what the module returns, its message and the Job's log included
        (each is replaced by C(********)). These are the passwords the Job's containers read, in case a
        program echoes its input in an error (psql prints a failing statement's text).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
notes:
  - "Check mode: nothing is deleted, created or waited for. The module reports C(changed=true) with
    RV(succeeded) null and empty RV(log_lines), except when O(replace=false) finds the Job already there:
    then C(changed=false), with that Job's status as it is now (RV(succeeded) null while it runs)."
  - "RV(log_lines) are those of the Job's pods, oldest first, each pod's containers in the order of its
    spec. For a C(Complete) Job they are only its C(Succeeded) pods' (the run that counted, not the
    failed attempts before it); a C(Complete) Job whose log cannot be read fails the task rather than
    give an empty result."
  - The pod logs are the container runtime's (the node keeps them as long as the pods exist); set the
    Job's C(ttlSecondsAfterFinished) long enough for the run to be read.
seealso:
  - module: kubernetes.core.k8s
  - module: kubernetes.core.k8s_log
  - plugin: dbos.deploy.job_outcome
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Run the migration Job of the role's template and show what it printed
  dbos.deploy.job_run:
    kubeconfig: "{{ dbos_kubeconfig }}"
    definition: "{{ lookup('ansible.builtin.template', 'job.yaml.j2') | ansible.builtin.from_yaml }}"
    timeout: 600
  register: migration

- name: Show its log
  ansible.builtin.debug:
    msg: "{{ migration.log_lines }}"

- name: Count something with psql in the cluster and use its output
  dbos.deploy.job_run:
    definition:
      apiVersion: batch/v1
      kind: Job
      metadata:
        name: count-rows
        namespace: dbos
      spec:
        backoffLimit: 0
        ttlSecondsAfterFinished: 3600
        template:
          spec:
            restartPolicy: Never
            containers:
              - name: psql
                image: postgres:16
                command: [psql, --no-psqlrc, --tuples-only, --no-align, -c, "SELECT count(*) FROM t"]
  register: counted
  changed_when: false  # it only reads

- name: Set the connection of kubernetes.core's modules and of this one at once
  module_defaults:
    group/dbos.deploy.k8s:
      kubeconfig: "{{ dbos_kubeconfig }}"
  block:
    - name: Apply the ConfigMap the Job reads
      kubernetes.core.k8s:
        template: sql.yaml.j2
    - name: Run the Job
      dbos.deploy.job_run:
        definition: "{{ lookup('ansible.builtin.template', 'job.yaml.j2') | ansible.builtin.from_yaml }}"
"""

RETURN = r"""
name:
  description: The Job's name.
  returned: always
  type: str
  sample: dbos-migrate-3-4-0
namespace:
  description: The Job's namespace.
  returned: always
  type: str
  sample: dbos
uid:
  description: The Job's uid (null in check mode when none is there).
  returned: always
  type: str
  sample: 5c0e0a4e-8d2b-4a49-9d89-2f4e5f3b7d7e
replaced:
  description: Whether an earlier Job of the same name was (or, in check mode, would be) deleted first.
  returned: always
  type: bool
  sample: false
succeeded:
  description:
    - True when the Job is C(Complete); false when it failed or did not finish in time (the task fails).
    - Null in check mode, and for a Job that has not finished.
  returned: always
  type: bool
  sample: true
status:
  description: The Job's C(status), as the API served it last (camelCase keys, as M(kubernetes.core.k8s_info)).
  returned: always
  type: dict
  sample:
    startTime: "2025-01-01T10:00:00Z"
    completionTime: "2025-01-01T10:00:12Z"
    succeeded: 1
    conditions:
      - {type: SuccessCriteriaMet, status: "True"}
      - {type: Complete, status: "True"}
conditions:
  description: The Job's C(status.conditions).
  returned: always
  type: list
  elements: dict
  sample:
    - {type: Failed, status: "True", reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}
pods:
  description: The Job's pods, oldest first, with each container's exit code, or why it is not done.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The pod's name.
      type: str
    phase:
      description: The pod's phase (C(Succeeded), C(Failed), C(Running), C(Pending)).
      type: str
    containers:
      description: Each container's C(name), C(exit_code) (null until it ended) and C(reason).
      type: list
      elements: dict
  sample:
    - name: dbos-migrate-3-4-0-x7k2p
      phase: Succeeded
      containers: [{name: migrate, exit_code: 0, reason: Completed}]
log_lines:
  description: The log of the Job's pods, one item a line (see the notes for whose). Empty in check mode.
  returned: always
  type: list
  elements: str
  sample: [Starting DBOS migrations, Applying DBOS system database schema migration 1]
log:
  description: RV(log_lines) as one text.
  returned: always
  type: str
  sample: "Starting DBOS migrations\nApplying DBOS system database schema migration 1"
"""

import copy

from ansible_collections.dbos.deploy.plugins.module_utils.jobs import JobApi, JobRunError, run_job
from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException


def argspec():
    args = copy.deepcopy(AUTH_ARG_SPEC)
    args.update(
        definition=dict(type="dict", required=True),
        namespace=dict(type="str"),
        replace=dict(type="bool", default=True),
        timeout=dict(type="float", default=300),
        poll_interval=dict(type="float", default=1),
        # no_log: AnsibleModule masks these values in everything the module returns
        hide=dict(type="list", elements="str", default=[], no_log=True),
    )
    return args


def main():
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True)
    p = module.params
    if p["timeout"] <= 0 or p["poll_interval"] <= 0:
        module.fail_json(msg="timeout and poll_interval must be positive numbers of seconds")
    try:
        from kubernetes.client.exceptions import ApiException

        api = JobApi(get_api_client(module).client.client)
        result = run_job(api, p["definition"], namespace=p["namespace"], replace=p["replace"], timeout=p["timeout"],
                         poll_interval=p["poll_interval"], check_mode=module.check_mode)
    except JobRunError as e:
        module.fail_json(msg=e.msg, **{"changed": False, **e.result})
    except ApiException as e:
        module.fail_json(msg=f"the Kubernetes API refused: {e.status} {e.reason}: {e.body}")
    except CoreException as e:
        module.fail_from_exception(e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
