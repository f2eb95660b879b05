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


def test_version_statuses_then_the_bound():
    assert queue_metrics_url("http://x:8080/metrics", "taskQueue", "max", 20, version="1.4.0",
                             statuses=["ENQUEUED", "PENDING"]) == \
        "http://x:8080/metrics/taskQueue?version=1.4.0&statuses=ENQUEUED,PENDING&max=20"
    assert queue_metrics_url("http://x/metrics", "q", statuses=["ENQUEUED"]) == "http://x/metrics/q?statuses=ENQUEUED"
    assert queue_metrics_url("http://x/metrics", "q", version="v1") == "http://x/metrics/q?version=v1"
    assert queue_metrics_url("http://x/metrics", "q", "max", 3, statuses=("PENDING",)) == \
        "http://x/metrics/q?statuses=PENDING&max=3"


def test_statuses_are_written_in_one_order():
    assert queue_metrics_url("http://x/metrics", "q", statuses=["PENDING", "ENQUEUED"]) == \
        "http://x/metrics/q?statuses=ENQUEUED,PENDING"


def test_the_version_is_percent_encoded():
    assert queue_metrics_url("http://x/metrics", "q", "max", 5, version="1.0 rc&max=1/é'#") == \
        "http://x/metrics/q?version=1.0%20rc%26max%3D1%2F%C3%A9%27%23&max=5"


def test_an_empty_version_counts_every_version():
    assert queue_metrics_url("http://x/metrics", "q", "max", 5, version="", statuses=None) == "http://x/metrics/q?max=5"
    assert queue_metrics_url("http://x/metrics", "q", version=None) == "http://x/metrics/q"


@pytest.mark.parametrize(("args", "options", "message"), [
    (("localhost:8080", "q"), {}, "http"),
    (("http://x", ""), {}, "non-empty"),
    (("http://x", "q", "max", None), {}, "whole number"),
    (("http://x", "q", "max", 0), {}, "at least 1"),
    (("http://x", "q"), {"version": 1.1}, "version must be a string"),
    (("http://x", "q"), {"version": "v\n1"}, "version must not hold control characters"),
    (("http://x", "q"), {"version": "v\x001"}, "version must not hold control characters"),
    (("http://x", "q"), {"statuses": "ENQUEUED"}, "statuses must be a list"),
    (("http://x", "q"), {"statuses": []}, "statuses must be a non-empty list of ENQUEUED and PENDING"),
    (("http://x", "q"), {"statuses": ["DELAYED"]}, "statuses must be a non-empty list of ENQUEUED and PENDING"),
    (("http://x", "q"), {"statuses": ["enqueued"]}, "statuses must be a non-empty list"),
    (("http://x", "q"), {"statuses": ["ENQUEUED", "ENQUEUED"]}, "each once"),
    (("http://x", "q", "version", 3), {}, "the bound's parameter cannot be version"),
    (("http://x", "q", "statuses", 3), {}, "the bound's parameter cannot be statuses"),
])
def test_bad_input_is_refused(args, options, message):
    with pytest.raises(AnsibleFilterError, match=message):
        queue_metrics_url(*args, **options)
