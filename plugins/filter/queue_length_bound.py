# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.queue_length_bound: how far a queue count must go for KEDA's replica count."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import QueueDepthError, count_bound


def _int(value, name):
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"queue_length_bound: {name} must be an integer, got {value!r}") from None


def queue_length_bound(max_replicas, target_per_replica):
    """``max_replicas * target_per_replica`` (at least 1): counting further never changes the answer."""
    try:
        return count_bound(_int(target_per_replica, "target_per_replica"), _int(max_replicas, "max_replicas"))
    except QueueDepthError as e:
        raise AnsibleFilterError(f"queue_length_bound: {e}") from None


class FilterModule:
    def filters(self):
        return {"queue_length_bound": queue_length_bound}
