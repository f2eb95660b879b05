"""Unit tests for the filter dbos.deploy.queue_metrics_url."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.queue_metrics_url import queue_metrics_url


def test_the_queue_and_its_bound():
    assert queue_metrics_url("http://dbos-app.dbos.svc.cluster.local:8080/metrics", "taskQueue", "max", 20) == \
        "http://dbos-app.dbos.svc.cluster.local:8080/metrics/taskQueue?max=20"


def test_a_queue_name_is_one_path_segment():
    assert queue_metrics_url("http://localhost:8080/metrics/", "a/b c?&", "max", "4") == \
        "http://localhost:8080/metrics/a%2Fb%20c%3F%26?max=4"


def test_no_bound_parameter_no_query():
    assert queue_metrics_url("https://x/metrics", "q") == "https://x/metrics/q"
    assert queue_metrics_url("https://x/metrics", "q", "", None) == "https://x/metrics/q"


@pytest.mark.parametrize(("args", "message"), [
    (("localhost:8080", "q"), "http"),
    (("http://x", ""), "non-empty"),
    (("http://x", "q", "max", None), "whole number"),
    (("http://x", "q", "max", 0), "at least 1"),
])
def test_bad_input_is_refused(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        queue_metrics_url(*args)
