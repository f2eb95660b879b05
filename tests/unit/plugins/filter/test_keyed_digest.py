"""Unit tests for the filter dbos.deploy.keyed_digest."""

import hashlib
import hmac
import json

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.keyed_digest import keyed_digest

KEY = "k" * 32


def test_the_same_value_key_and_purpose_give_the_same_digest():
    one = keyed_digest("s3cret-password", KEY, "rds/app-role")
    assert one == keyed_digest("s3cret-password", KEY, "rds/app-role")
    assert one.startswith("hmac-sha256:") and len(one) == len("hmac-sha256:") + 64


def test_a_different_value_key_or_purpose_gives_another_digest():
    one = keyed_digest("s3cret-password", KEY, "rds/app-role")
    assert keyed_digest("s3cret-passworD", KEY, "rds/app-role") != one
    assert keyed_digest("s3cret-password", "K" * 32, "rds/app-role") != one
    assert keyed_digest("s3cret-password", KEY, "keda/reader") != one


def test_it_is_an_hmac_of_the_value_not_a_plain_hash():
    digest = keyed_digest("s3cret-password", KEY, "p")
    message = json.dumps({"purpose": "p", "document": "s3cret-password"}, sort_keys=True, separators=(",", ":"))
    assert digest == "hmac-sha256:" + hmac.new(KEY.encode(), message.encode(), hashlib.sha256).hexdigest()
    # without the key, the usual unkeyed guesses do not match
    assert digest.split(":", 1)[1] not in (hashlib.sha256(b"s3cret-password").hexdigest(),
                                           hashlib.sha256(message.encode()).hexdigest())


@pytest.mark.parametrize("key", ["", "short", "x" * 31, None, 12345678901234567890123456789012345])
def test_a_key_too_short_or_not_a_string_is_refused(key):
    with pytest.raises(AnsibleFilterError, match="at least 32 characters"):
        keyed_digest("value", key, "p")


def test_a_purpose_is_needed():
    with pytest.raises(AnsibleFilterError, match="purpose"):
        keyed_digest("value", KEY, "")
