"""Unit tests for the reconciler's decision: which PENDING workflows go back to their queue."""

import pytest
from dbos_reconciler.decide import Pending, Recovery, is_dead, recoveries

PREFIX = "dbos-app-"
LIVE = {"dbos-app-7f9c-abcde": "Running", "dbos-app-7f9c-fghij": "Pending", "dbos-app-1-55d4-klmno": "Running"}


@pytest.mark.parametrize(("executor", "pods", "dead"), [
    ("dbos-app-7f9c-abcde", LIVE, False),            # Running
    ("dbos-app-7f9c-fghij", LIVE, False),            # not started yet
    ("dbos-app-7f9c-zzzzz", LIVE, True),             # its object is gone
    ("dbos-app-1-55d4-gone1", LIVE, True),           # a retained version's pod, gone
    ("dbos-app-7f9c-evict", {"dbos-app-7f9c-evict": "Failed"}, True),       # evicted: final
    ("dbos-app-7f9c-done0", {"dbos-app-7f9c-done0": "Succeeded"}, True),
    ("dbos-app-7f9c-unkno", {"dbos-app-7f9c-unkno": "Unknown"}, False),     # node unreachable: maybe alive
    ("laptop", {}, False),                           # not one of the application's pods
    ("local", {}, False),
    ("dbos-app-", {}, False),                        # the bare prefix names no pod
    ("", {}, False),
    (None, {}, False),
])
def test_only_an_application_pod_that_is_gone_or_final_is_dead(executor, pods, dead):
    assert is_dead(executor, pods, PREFIX) is dead


def test_a_terminating_pod_is_alive_its_phase_is_still_running():
    # the object of a Terminating pod exists, with its phase (Running) until its containers stop
    assert not is_dead("dbos-app-7f9c-abcde", {"dbos-app-7f9c-abcde": "Running"}, PREFIX)


def test_recoveries_group_by_executor_and_queue_in_a_stable_order():
    pending = [
        Pending("w3", "dbos-app-x-gone2", "taskQueue", "2"),
        Pending("w1", "dbos-app-x-gone1", "taskQueue", "1"),
        Pending("w2", "dbos-app-x-gone1", "taskQueue", "1"),
        Pending("w4", "dbos-app-x-gone1", None, "1"),             # not on a queue
        Pending("w5", "dbos-app-7f9c-abcde", "taskQueue", "1"),   # alive
        Pending("w6", "someone-else", "taskQueue", "1"),
        Pending("w7", "dbos-app-x-gone1", "other", None),
    ]
    assert recoveries(pending, LIVE, PREFIX) == [
        Recovery("dbos-app-x-gone1", None, ("w4",), ("1",)),
        Recovery("dbos-app-x-gone1", "other", ("w7",), ()),
        Recovery("dbos-app-x-gone1", "taskQueue", ("w1", "w2"), ("1",)),
        Recovery("dbos-app-x-gone2", "taskQueue", ("w3",), ("2",)),
    ]


def test_nothing_to_do_when_every_executor_lives():
    assert recoveries([Pending("w", "dbos-app-7f9c-abcde", "taskQueue")], LIVE, PREFIX) == []


def test_an_empty_prefix_is_refused():
    with pytest.raises(ValueError, match="executor_prefix"):
        recoveries([], LIVE, "")
