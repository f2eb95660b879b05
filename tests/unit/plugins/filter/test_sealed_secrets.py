"""Unit tests for the filters dbos.deploy.sealed_secrets_unsynced and dbos.deploy.secrets_unowned."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.sealed_secrets import sealed_secrets_unsynced, secrets_unowned


def sealed(name, generation=2, observed=2, synced="True", uid=None):
    status = {"conditions": [{"type": "Synced", "status": synced}]} if synced else {}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"metadata": {"name": name, "generation": generation, "uid": uid or f"uid-{name}"}, "status": status}


def secret(name, owner=None, uid=None, kind="SealedSecret"):
    refs = [{"kind": kind, "name": owner or name, "uid": uid or f"uid-{owner or name}"}] if owner is not False else []
    return {"metadata": {"name": name, "ownerReferences": refs}}


def test_synced_for_the_generation_applied_is_done():
    assert sealed_secrets_unsynced([sealed("a"), sealed("b"), sealed("other", synced="False")], ["a", "b"]) == []


@pytest.mark.parametrize("state", [
    {"observed": 1},  # the controller has not seen the last apply
    {"observed": None},  # nor any
    {"synced": "False"},  # it could not unseal it
    {"synced": None},  # no condition yet
])
def test_not_yet_unsealed_is_pending(state):
    assert sealed_secrets_unsynced([sealed("a"), sealed("b", **state)], ["a", "b"]) == ["b"]


def test_a_missing_sealed_secret_is_pending_in_the_order_given():
    assert sealed_secrets_unsynced([sealed("b")], ["c", "b", "a"]) == ["c", "a"]


def test_secrets_owned_by_their_sealed_secret():
    assert secrets_unowned([secret("a"), secret("b")], [sealed("a"), sealed("b")], ["a", "b"]) == []


@pytest.mark.parametrize("made", [
    secret("a", uid="uid-of-an-earlier-one"),  # left over from a SealedSecret deleted since
    secret("a", owner=False),  # made by hand
    secret("a", owner="b"),  # owned by another
    secret("a", kind="Deployment"),
])
def test_a_secret_not_owned_by_its_sealed_secret_is_named(made):
    assert secrets_unowned([made, secret("b")], [sealed("a"), sealed("b")], ["a", "b"]) == ["a"]


def test_a_missing_secret_or_sealed_secret_is_named():
    assert secrets_unowned([secret("b")], [sealed("b")], ["a", "b"]) == ["a"]
    assert secrets_unowned([secret("a")], [], ["a"]) == ["a"]


def test_bad_input_is_refused():
    with pytest.raises(AnsibleFilterError, match="must be a list"):
        sealed_secrets_unsynced({"a": 1}, ["a"])
    with pytest.raises(AnsibleFilterError, match="names must be a list"):
        secrets_unowned([], [], "a")
