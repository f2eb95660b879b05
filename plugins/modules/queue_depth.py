#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: queue_depth
short_description: Read a DBOS queue's depth and the number of replicas it calls for
version_added: 0.1.0
description:
  - Answers the question KEDA asks, namely how deep a DBOS queue is and how many workers that needs,
    so that playbooks can report it, wait for a queue to drain (before an upgrade or a teardown),
    and retire old application versions.
  - With O(source=url) it reads an application's metrics endpoint, as KEDA's C(metrics-api) trigger
    does. With O(source=database) it runs one indexed COUNT over DBOS's system table
    C(workflow_status), as KEDA's C(postgresql) trigger does.
  - "The count is bounded: it stops at O(max_replicas) x O(target_per_replica) workflows (and at
    O(wait_until.queue_length_at_most) + 1 with a wait), the most the replica count can use. At that
    many or more, the formula below gives O(max_replicas) whatever the backlog, so RV(desired_replicas)
    is what a full count would give, while a poll costs the same at a million queued as at a hundred.
    RV(queue_length) is then exact below the bound and a lower bound at it; RV(queue_length_exact)
    says which. O(exact_count=true) counts every workflow, at a cost that grows with the backlog."
  - With O(source=url) the endpoint does the counting; the sample app bounds it with C(?max=N) in the
    URL (what the keda role writes into KEDA's trigger) and says whether its answer is exact. An answer
    that is a lower bound below what the replica count needs fails, rather than under-counting.
  - The replica count is KEDA's and the HPA's formula, desired_replicas = min(max(ceil(queue_length /
    target_per_replica), min_replicas), max_replicas). An empty queue asks for O(min_replicas), so 0
    replicas when O(min_replicas=0) (scale to zero).
  - Never changes anything (C(changed) is always false).
author:
  - dbos.deploy maintainers (!UNKNOWN)
options:
  source:
    description: Where to read the depth.
    type: str
    choices: [url, database]
    default: database
  queue:
    description: Name of the DBOS queue. With O(source=url) the URL names it; this only labels messages.
    type: str
    default: taskQueue
  url:
    description:
      - Metrics endpoint answering JSON, for example C(http://dbos-app.dbos.svc:8080/metrics/taskQueue).
      - The sample app counts up to C(max) with C(?max=N); give at least O(max_replicas) x O(target_per_replica).
      - Required with O(source=url).
    type: str
  value_location:
    description: Dotted path of the number in the JSON answer (KEDA's C(valueLocation)).
    type: str
    default: queue_length
  validate_certs:
    description: Verify the endpoint's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle to verify the endpoint's certificate with.
    type: path
  timeout:
    description: Seconds for one HTTP request or one database connection.
    type: float
    default: 10
  database_url:
    description:
      - PostgreSQL URL of the DBOS system database, C(postgresql://user:password@host:5432/dbos_app).
      - A role that may only SELECT C(workflow_status) is enough. Required with O(source=database).
    type: str
  schema:
    description: Schema of the DBOS system tables.
    type: str
    default: dbos
  statuses:
    description:
      - Workflow statuses to count. C(ENQUEUED) is what waits; add C(PENDING) (running, or orphaned by
        a killed worker) for the load on the queue.
    type: list
    elements: str
    choices: [ENQUEUED, PENDING, DELAYED]
    default: [ENQUEUED]
  application_name:
    description: Count only this application's workflows.
    type: str
  application_version:
    description: Count only workflows of this application version.
    type: str
  group_by:
    description:
      - Also return the count per application version, in RV(by_version) (O(source=database)).
      - The counts per version are always exact (the count is not bounded).
    type: str
    choices: [application_version]
  exact_count:
    description:
      - Count every workflow, so that RV(queue_length) is exact even above the bound (O(source=database)).
      - Its cost grows with the backlog (an index-only scan of every in-flight workflow of the queue);
        RV(desired_replicas) is the same either way.
      - With O(source=url), fail if the endpoint answers a lower bound.
    type: bool
    default: false
  target_per_replica:
    description: Workflows one replica takes at once (the app's worker concurrency; KEDA's C(targetValue)).
    type: int
    default: 2
  min_replicas:
    description: Fewest replicas (KEDA's C(minReplicaCount)).
    type: int
    default: 1
  max_replicas:
    description: Most replicas (KEDA's C(maxReplicaCount)).
    type: int
    default: 10
  wait_until:
    description: Poll until the condition holds; fail with the last reading after O(wait_timeout).
    type: dict
    suboptions:
      queue_length_at_most:
        description: Wait until the depth is at most this (0 for a drained queue).
        type: int
        required: true
  wait_timeout:
    description: Seconds to wait with O(wait_until).
    type: float
    default: 300
  interval:
    description: Seconds between polls with O(wait_until).
    type: float
    default: 5
notes:
  - Supports check mode; it reads only.
  - O(source=database) needs the Python package C(psycopg) (version 3) where the module runs.
requirements:
  - psycopg >= 3.1 (O(source=database))
"""

EXAMPLES = r"""
- name: How deep is the queue, and how many workers does it call for? (as KEDA sees it)
  dbos.deploy.queue_depth:
    source: url
    # the bound KEDA uses: max replicas (10) x target per replica (2)
    url: http://dbos-app.dbos.svc.cluster.local:8080/metrics/taskQueue?max=20
    target_per_replica: 2
  register: depth

- name: The load on the queue, straight from the database, per application version
  dbos.deploy.queue_depth:
    database_url: "{{ vault_dbos_readonly_url }}"
    queue: taskQueue
    statuses: [ENQUEUED, PENDING]
    application_name: dbos-sample-app
    group_by: application_version
  register: load
  no_log: true  # the URL holds a password

- name: The exact backlog, however deep (a full count; its cost grows with the backlog)
  dbos.deploy.queue_depth:
    database_url: "{{ vault_dbos_readonly_url }}"
    exact_count: true
  register: backlog
  no_log: true

- name: Wait for the queue to drain before an upgrade
  dbos.deploy.queue_depth:
    database_url: "{{ vault_dbos_readonly_url }}"
    queue: taskQueue
    statuses: [ENQUEUED, PENDING]
    wait_until:
      queue_length_at_most: 0
    wait_timeout: 900
    interval: 10
"""

RETURN = r"""
queue_length:
  description:
    - Workflows on the queue in the counted statuses (or the number the endpoint answered).
    - Exact when RV(queue_length_exact) is true; when it is false, the count stopped at its bound and
      there are at least this many.
  returned: success, and on a wait that timed out
  type: int
  sample: 7
queue_length_exact:
  description:
    - True when RV(queue_length) is the exact count, false when it is a lower bound (the count reached
      RV(count_bound)).
    - With O(source=url), the endpoint's own C(<value_location>_exact) field (the sample app's
      C(queue_length_exact)); null when the answer has none.
  returned: success, and on a wait that timed out
  type: bool
  sample: true
count_bound:
  description:
    - Most workflows the count would reach; null when the count was exact (O(exact_count), O(group_by))
      or the endpoint counted (O(source=url)).
  returned: success, and on a wait that timed out
  type: int
  sample: 20
desired_replicas:
  description: Replicas KEDA would ask for (see the formula above).
  returned: success, and on a wait that timed out
  type: int
  sample: 4
by_version:
  description: Counts per application version (C("") for workflows without one).
  returned: with O(group_by=application_version)
  type: dict
  sample: {"v1": 3, "v2": 4}
elapsed_ms:
  description: Milliseconds from the first poll to the last one.
  returned: always
  type: float
  sample: 12.5
polls:
  description: How many times the depth was read.
  returned: success, and on a wait that timed out
  type: int
  sample: 1
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import QueueDepthError, WaitTimeout, poll


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type="str", choices=["url", "database"], default="database"),
            queue=dict(type="str", default="taskQueue"),
            url=dict(type="str"),
            value_location=dict(type="str", default="queue_length"),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="float", default=10),
            database_url=dict(type="str", no_log=True),
            schema=dict(type="str", default="dbos"),
            statuses=dict(type="list", elements="str", choices=["ENQUEUED", "PENDING", "DELAYED"],
                          default=["ENQUEUED"]),
            application_name=dict(type="str"),
            application_version=dict(type="str"),
            group_by=dict(type="str", choices=["application_version"]),
            exact_count=dict(type="bool", default=False),
            target_per_replica=dict(type="int", default=2),
            min_replicas=dict(type="int", default=1),
            max_replicas=dict(type="int", default=10),
            wait_until=dict(type="dict", options=dict(queue_length_at_most=dict(type="int", required=True))),
            wait_timeout=dict(type="float", default=300),
            interval=dict(type="float", default=5),
        ),
        required_if=[("source", "url", ["url"]), ("source", "database", ["database_url"])],
        supports_check_mode=True,
    )
    start = time.monotonic()
    try:
        result = poll(module.params, time.monotonic, time.sleep)
    except WaitTimeout as e:
        module.fail_json(msg=str(e), **e.result)
    except QueueDepthError as e:
        module.fail_json(msg=str(e), elapsed_ms=round((time.monotonic() - start) * 1000, 1))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
