#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: scale_timeline
short_description: Watch a DBOS application's replicas follow its queue, and return the timeline
version_added: 0.1.0
description:
  - "The watching half of the guide's autoscaling test (C(playbooks/load_test.yml) enqueues the work).
    Every O(interval) seconds it reads the queue depth and the desired (C(spec.replicas)) and ready
    (C(status.readyReplicas)) replicas of the application's Deployments, those O(selector) selects (the
    current version's, and any older version's the app role keeps), until the queue is empty and the
    replicas are back to O(settled_replicas), or O(timeout)."
  - It waits for the load to show first (a non-empty queue, or more replicas than O(settled_replicas)),
    so that a watch started before the work reaches the queue does not end at once.
  - The queue depth is read as M(dbos.deploy.queue_depth) reads it, from the app's metrics endpoint
    (O(source=url)) or with one COUNT in the database (O(source=database)).
  - Returns the timeline, its peaks and when they were reached, when the queue drained and when the
    replicas settled, and the timeline as a table and as a text chart to print.
  - Never changes anything (C(changed) is always false); runs the same in check mode.
author:
  - dbos.deploy maintainers (!UNKNOWN)
requirements:
  - kubernetes >= 24.2.0
  - psycopg >= 3 (with O(source=database))
options:
  namespace:
    description: Namespace of the Deployments.
    type: str
    required: true
  selector:
    description: Label selector of the application's Deployments (the app role labels each version's with its name).
    type: str
    default: app.kubernetes.io/name=dbos-app
  source:
    description: Where to read the queue depth.
    type: str
    choices: [url, database]
    default: url
  url:
    description:
      - The app's metrics endpoint with its query, for example
        C(http://127.0.0.1:8080/metrics/taskQueue?statuses=ENQUEUED,PENDING) through C(kubectl port-forward).
      - Required with O(source=url).
    type: str
  value_location:
    description: Dotted path of the number in the endpoint's JSON answer.
    type: str
    default: queue_length
  database_url:
    description: C(postgresql://...) of the system database, with O(source=database).
    type: str
  queue:
    description: The DBOS queue, with O(source=database).
    type: str
    default: taskQueue
  statuses:
    description: Workflow statuses counted, with O(source=database).
    type: list
    elements: str
    default: [ENQUEUED, PENDING]
  schema:
    description: DBOS's system schema, with O(source=database).
    type: str
    default: dbos
  settled_replicas:
    description:
      - The replicas, summed over the Deployments, the autoscaler comes back to once the work is done (its minimum).
    type: int
    default: 1
  interval:
    description: Seconds between two samples.
    type: float
    default: 2
  timeout:
    description: Seconds the watch may take; the module fails with the timeline so far after it.
    type: float
    default: 600
  request_timeout:
    description: Seconds one read of the queue may take.
    type: float
    default: 10
  chart_width:
    description: Columns of the text chart.
    type: int
    default: 72
  read_failures:
    description:
      - Reads of the queue that may fail in a row (a port-forward whose pod was scaled in, say) before the
        watch fails; each is a sample with C(queue_length) null.
    type: int
    default: 5
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
"""

EXAMPLES = r"""
- name: Watch the app scale with its queue
  dbos.deploy.scale_timeline:
    namespace: dbos
    url: http://127.0.0.1:8080/metrics/taskQueue?statuses=ENQUEUED,PENDING
    settled_replicas: 1
    interval: 2
    timeout: 900
  register: watched

- name: Show it
  ansible.builtin.debug:
    msg: "{{ watched.table + [''] + watched.chart }}"
"""

RETURN = r"""
timeline:
  description:
    - One sample per O(interval) - C(t) (seconds since the start), C(queue_length), C(desired) and C(ready)
      (summed over the Deployments), and C(deployments) (each one's C(desired) and C(ready)).
  returned: always
  type: list
  elements: dict
  sample:
    - {"t": 0.0, "queue_length": 10, "desired": 1, "ready": 1, "deployments": {"dbos-app": {"desired": 1, "ready": 1}}}
settled:
  description: Whether the queue was empty and the replicas back to O(settled_replicas) at the end.
  returned: always
  type: bool
peak_queue_length:
  description: The deepest queue seen.
  returned: always
  type: int
peak_desired:
  description: The most replicas asked for.
  returned: always
  type: int
peak_ready:
  description: The most replicas ready at once.
  returned: always
  type: int
peak_desired_at:
  description: Seconds from the start until the most replicas were first asked for.
  returned: always
  type: float
peak_ready_at:
  description: Seconds from the start until the most replicas were first ready.
  returned: always
  type: float
drained_at:
  description: Seconds from the start until the queue was empty for good (null if it never held work).
  returned: always
  type: float
settled_at:
  description: Seconds from the start until the replicas had settled (null if they did not).
  returned: always
  type: float
table:
  description: The timeline as lines of text (seconds, queue, desired, ready; and each Deployment's when several).
  returned: always
  type: list
  elements: str
chart:
  description: The timeline as a text chart (queue depth C(q), desired C(D), ready C(r)), one line per row.
  returned: always
  type: list
  elements: str
"""

import copy
import time

from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import (
    DatabaseSource,
    QueueDepthError,
    UrlSource,
)
from ansible_collections.dbos.deploy.plugins.module_utils.scale_timeline import (
    ReadError,
    TimelineError,
    chart,
    positive,
    table,
    watch,
)
from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import CoreException


def argspec():
    args = copy.deepcopy(AUTH_ARG_SPEC)
    args.update(
        namespace=dict(type="str", required=True),
        selector=dict(type="str", default="app.kubernetes.io/name=dbos-app"),
        source=dict(type="str", choices=["url", "database"], default="url"),
        url=dict(type="str"),
        value_location=dict(type="str", default="queue_length"),
        database_url=dict(type="str", no_log=True),
        queue=dict(type="str", default="taskQueue"),
        statuses=dict(type="list", elements="str", default=["ENQUEUED", "PENDING"]),
        schema=dict(type="str", default="dbos"),
        settled_replicas=dict(type="int", default=1),
        interval=dict(type="float", default=2),
        timeout=dict(type="float", default=600),
        request_timeout=dict(type="float", default=10),
        chart_width=dict(type="int", default=72),
        read_failures=dict(type="int", default=5),
    )
    return args


def queue_reader(p):
    if p["source"] == "url":
        source = UrlSource({"url": p["url"], "value_location": p["value_location"], "validate_certs": True,
                            "ca_path": None, "timeout": p["request_timeout"]})
    else:
        source = DatabaseSource({"database_url": p["database_url"], "statuses": p["statuses"], "schema": p["schema"],
                                 "queue": p["queue"], "timeout": p["request_timeout"]})
    return source


def main():
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True,
                              required_if=[("source", "url", ["url"]), ("source", "database", ["database_url"])])
    p = module.params
    try:
        for name in ("interval", "timeout", "request_timeout"):
            positive(p[name], name)
        if p["settled_replicas"] < 0 or p["read_failures"] < 1:
            raise TimelineError(f"settled_replicas must be 0 or more and read_failures at least 1, got "
                                f"{p['settled_replicas']} and {p['read_failures']}")
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api_client = get_api_client(module).client.client
        apps = client.AppsV1Api(api_client)

        def read_deployments():
            found = apps.list_namespaced_deployment(p["namespace"], label_selector=p["selector"])
            return [api_client.sanitize_for_serialization(d) for d in found.items]

        source = queue_reader(p)

        def read_queue():
            try:
                return source.read()[0]
            except QueueDepthError as e:
                raise ReadError(str(e)) from None

        try:
            result = watch(read_queue, read_deployments, time.monotonic, time.sleep, interval=p["interval"],
                           timeout=p["timeout"], settled_replicas=p["settled_replicas"],
                           read_failures=p["read_failures"])
        finally:
            source.close()
    except TimelineError as e:
        partial = e.result
        if partial:
            partial = {**partial, "table": table(partial["timeline"]),
                       "chart": chart(partial["timeline"], p["chart_width"])}
        module.fail_json(msg=e.msg, changed=False, **partial)
    except QueueDepthError as e:
        module.fail_json(msg=str(e), changed=False)
    except ApiException as e:
        module.fail_json(msg=f"the Kubernetes API refused: {e.status} {e.reason}: {e.body}", changed=False)
    except CoreException as e:
        module.fail_from_exception(e)
    module.exit_json(changed=False, table=table(result["timeline"]), chart=chart(result["timeline"], p["chart_width"]),
                     **result)


if __name__ == "__main__":
    main()
