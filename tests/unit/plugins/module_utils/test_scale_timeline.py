"""Unit tests for the timeline of dbos.deploy.scale_timeline: sampling until settled, the summary and
the chart, on samples as the Kubernetes API and the metrics endpoint give them."""

import pytest
from ansible_collections.dbos.deploy.plugins.module_utils.scale_timeline import (
    ReadError,
    TimelineError,
    chart,
    is_settled,
    replicas,
    summary,
    table,
    watch,
)

from tests.unit.plugins.module_utils.fake_time import FakeTime


def deployment(name, desired, ready):
    return {"metadata": {"name": name}, "spec": {"replicas": desired}, "status": {"readyReplicas": ready or None}}


def scripted(samples):
    """A queue reader and a Deployments reader playing ``samples`` [(queue, [(name, desired, ready)])], the
    last one again and again."""
    state = {"i": -1}

    def read_queue():
        state["i"] = min(state["i"] + 1, len(samples) - 1)
        return samples[state["i"]][0]

    def read_deployments():
        return [deployment(*d) for d in samples[state["i"]][1]]

    return read_queue, read_deployments


GUIDE = [(0, [("dbos-app", 1, 1)]),            # enqueued, not counted yet
         (10, [("dbos-app", 1, 1)]), (10, [("dbos-app", 5, 1)]), (8, [("dbos-app", 5, 3)]),
         (6, [("dbos-app", 5, 5)]), (0, [("dbos-app", 5, 5)]), (0, [("dbos-app", 1, 5)]),
         (0, [("dbos-app", 1, 1)]), (0, [("dbos-app", 1, 1)])]


def test_replicas_sums_the_deployments_and_reads_a_missing_ready_count_as_zero():
    by_name, desired, ready = replicas([deployment("dbos-app", 3, 2), deployment("dbos-app-1", 1, 0)])
    assert (by_name, desired, ready) == ({"dbos-app": {"desired": 3, "ready": 2},
                                          "dbos-app-1": {"desired": 1, "ready": 0}}, 4, 2)


@pytest.mark.parametrize(("sample", "settled"), [
    ({"queue_length": 0, "desired": 1, "ready": 1}, True),
    ({"queue_length": 1, "desired": 1, "ready": 1}, False),
    ({"queue_length": 0, "desired": 2, "ready": 2}, False),
    ({"queue_length": 0, "desired": 1, "ready": 0}, False),
])
def test_settled_means_empty_and_back_to_the_minimum_all_ready(sample, settled):
    assert is_settled(sample, 1) is settled


def test_the_guides_test_rises_to_five_and_comes_back():
    clock = FakeTime()
    result = watch(*scripted(GUIDE), clock.clock, clock.sleep, interval=2, timeout=60, settled_replicas=1)
    assert [(s["t"], s["queue_length"], s["desired"], s["ready"]) for s in result["timeline"]] == [
        (0.0, 0, 1, 1), (2.0, 10, 1, 1), (4.0, 10, 5, 1), (6.0, 8, 5, 3), (8.0, 6, 5, 5), (10.0, 0, 5, 5),
        (12.0, 0, 1, 5), (14.0, 0, 1, 1)]  # the first sample, settled-looking, did not end it: no load yet
    assert {k: result[k] for k in ("settled", "peak_queue_length", "peak_desired", "peak_ready", "peak_desired_at",
                                   "peak_ready_at", "drained_at", "settled_at")} == {
        "settled": True, "peak_queue_length": 10, "peak_desired": 5, "peak_ready": 5, "peak_desired_at": 4.0,
        "peak_ready_at": 8.0, "drained_at": 10.0, "settled_at": 14.0}


def test_a_timeout_fails_with_the_timeline_so_far():
    clock = FakeTime()
    stuck = [(3, [("dbos-app", 2, 2)])]
    with pytest.raises(TimelineError, match="not settled within 5 s: last queue length 3, 2 desired and 2 ready") as e:
        watch(*scripted(stuck), clock.clock, clock.sleep, interval=2, timeout=5, settled_replicas=1)
    assert [s["t"] for s in e.value.result["timeline"]] == [0.0, 2.0, 4.0, 5.0]
    assert e.value.result["settled"] is False and e.value.result["drained_at"] is None


def test_a_queue_that_drains_twice_drained_at_the_last_time():
    timeline = [{"t": float(t), "queue_length": q, "desired": 1, "ready": 1, "deployments": {}}
                for t, q in enumerate([2, 0, 3, 0, 0])]
    assert summary(timeline, settled=True)["drained_at"] == 3.0


def test_the_chart_draws_each_series_on_the_value_axis():
    samples = [{"t": 0.0, "queue_length": 4, "desired": 1, "ready": 1, "deployments": {}},
               {"t": 5.0, "queue_length": 0, "desired": 2, "ready": 2, "deployments": {}},
               {"t": 10.0, "queue_length": 0, "desired": 2, "ready": 2, "deployments": {}}]
    lines = chart(samples, width=20, height=4)  # (each column shows the last sample at or before its time)
    assert lines[:6] == [
        "4 |qqqqqqqqqq",             # the queue at 4 for the first half
        "3 |",
        "2 |          **********",   # desired and ready meet at 2 in the second half,
        "1 |**********",             # at 1 in the first
        "0 |          qqqqqqqqqq",
        "  +--------------------"]
    assert lines[6].split() == ["0s", "2s", "5s", "8s", "10s"]
    assert "q queue depth" in lines[7]
    assert chart(samples, width=10, height=4)[6].split() == ["0s", "5s", "8s"]  # ticks that would touch are left out


def test_the_table_shows_each_deployment_when_there_are_several():
    samples = [{"t": 1.25, "queue_length": 3, "desired": 3, "ready": 2,
                "deployments": {"dbos-app": {"desired": 2, "ready": 2}, "dbos-app-1": {"desired": 1, "ready": 0}}},
               {"t": 3.0, "queue_length": 0, "desired": 1, "ready": 1,
                "deployments": {"dbos-app": {"desired": 1, "ready": 1}}}]
    assert table(samples) == [
        "  t (s)  queue  desired  ready  dbos-app  dbos-app-1",
        "    1.2      3        3      2       2/2         1/0",
        "    3.0      0        1      1       1/1           -"]


def test_a_queue_that_cannot_be_read_is_a_gap_unless_it_stays_unreadable():
    clock = FakeTime()
    answers = iter([3, ReadError("no answer"), 0, 0])

    def read_queue():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    result = watch(read_queue, lambda: [deployment("dbos-app", 1, 1)], clock.clock, clock.sleep, interval=1,
                   timeout=60, settled_replicas=1)
    assert [s["queue_length"] for s in result["timeline"]] == [3, None, 0]
    assert table(result["timeline"])[2].split() == ["1.0", "?", "1", "1"]

    def broken():
        raise ReadError("connection refused")

    with pytest.raises(TimelineError, match="could not be read 3 times in a row: connection refused"):
        watch(broken, lambda: [], clock.clock, clock.sleep, interval=1, timeout=60, settled_replicas=1, read_failures=3)
