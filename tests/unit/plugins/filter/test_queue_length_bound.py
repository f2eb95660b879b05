"""Unit tests for the filter dbos.deploy.queue_length_bound."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.queue_length_bound import queue_length_bound
from ansible_collections.dbos.deploy.plugins.module_utils import queue_depth as qd


@pytest.mark.parametrize(("max_replicas", "target", "expected"), [
    (10, 2, 20),
    ("10", "2", 20),  # -e values arrive as strings
    (0, 3, 1),
    (1, 1, 1),
])
def test_it_is_the_modules_bound(max_replicas, target, expected):
    assert queue_length_bound(max_replicas, target) == expected == qd.count_bound(int(target), int(max_replicas))


@pytest.mark.parametrize(("max_replicas", "target", "message"), [
    ("ten", 2, "max_replicas must be an integer"),
    (10, None, "target_per_replica must be an integer"),
    (True, 2, "max_replicas must be an integer"),
    (10, 0, "target_per_replica must be positive"),
    (-1, 2, "max_replicas must be 0 or more"),
])
def test_bad_settings_are_refused(max_replicas, target, message):
    with pytest.raises(AnsibleFilterError, match=message):
        queue_length_bound(max_replicas, target)
