"""Unit tests for the reconciler's leader election (tests/roles/test_reconciler.py runs it against
the real API server): the decision, and the rounds of two candidates on one Lease, with their clocks
under the test's control. The Lease store here keeps what the API server guarantees of an update: it
is refused (409) unless it carries the resourceVersion last written."""

import datetime

import pytest
from dbos_reconciler.kube import KubeError, Lease, lease_action, micro_time


class Store:
    """One Lease, as the API server keeps it."""

    def __init__(self, spec: dict | None = None):
        self.version, self.spec, self.writes = 1, dict(spec or {"leaseDurationSeconds": 10}), 0

    def request(self, method, path, body=None):
        if method == "GET":
            return {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(self.spec)}
        assert method == "PUT"
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise KubeError(409, "the object has been modified")
        self.version += 1
        self.writes += 1
        self.spec = dict(body["spec"])
        return {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(self.spec)}


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def candidate(store, name, clock):
    return Lease(store, "dbos", "dbos-app-reconciler", name, 10, monotonic=clock,
                 now=lambda: datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC))


@pytest.mark.parametrize(("holder", "expired", "action"), [
    ("me", False, "renew"), ("me", True, "renew"), (None, False, "acquire"), ("", False, "acquire"),
    ("other", False, "wait"), ("other", True, "acquire"),
])
def test_the_decision(holder, expired, action):
    assert lease_action({"holderIdentity": holder} if holder is not None else {}, "me", expired) == action


def test_a_free_lease_is_taken_and_renewed_and_the_other_candidate_waits():
    store, clock = Store(), Clock()
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    assert a.try_acquire_or_renew()
    assert (store.spec["holderIdentity"], store.spec["leaseTransitions"]) == ("a", 0)
    assert not b.try_acquire_or_renew()
    clock.t += 5
    assert a.try_acquire_or_renew() and a.holding()
    clock.t += 9  # b saw a's record change 9 s ago: not expired for b
    assert not b.try_acquire_or_renew()


def test_a_holder_that_stops_renewing_is_taken_over_after_the_duration_by_the_candidates_own_clock():
    store, clock = Store({"holderIdentity": "dead", "renewTime": "2020-01-01T00:00:00.000000Z",
                          "leaseDurationSeconds": 10, "leaseTransitions": 3}), Clock()
    b = candidate(store, "b", clock)
    # the renewTime is years old, but b measures from when it first saw this record
    assert not b.try_acquire_or_renew()
    clock.t += 10.5
    assert b.try_acquire_or_renew()
    assert (store.spec["holderIdentity"], store.spec["leaseTransitions"]) == ("b", 4)
    assert store.spec["acquireTime"] == store.spec["renewTime"] == micro_time(
        datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC))


def test_of_two_candidates_writing_at_once_one_wins():
    store, clock = Store(), Clock()
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)

    class Interleaved:  # b reads the free Lease, then a takes it, then b writes what it read
        def request(self, method, path, body=None):
            answer = store.request(method, path, body)
            if method == "GET":
                assert a.try_acquire_or_renew()
            return answer

    b.api = Interleaved()
    assert not b.try_acquire_or_renew()  # its write is refused (409): it stays a candidate
    assert (store.spec["holderIdentity"], b.holding()) == ("a", False)


def test_the_holder_acts_only_while_its_renewal_is_fresh_and_releases_on_stop():
    store, clock = Store(), Clock()
    a, b = candidate(store, "a", clock), candidate(store, "b", clock)
    assert not a.holding()
    assert a.try_acquire_or_renew()
    clock.t += 7.9
    assert a.holding()  # within the duration less the 2 s margin
    clock.t += 0.2
    assert not a.holding()
    a.release()
    assert "holderIdentity" not in store.spec and not a.holding()
    assert b.try_acquire_or_renew()  # at once: released, not expired
    assert store.spec["holderIdentity"] == "b"


def test_release_leaves_a_lease_another_holds_alone():
    store, clock = Store(), Clock()
    a = candidate(store, "a", clock)
    assert a.try_acquire_or_renew()
    store.spec["holderIdentity"] = "b"  # taken over meanwhile
    writes = store.writes
    a.release()
    assert store.spec["holderIdentity"] == "b" and store.writes == writes
