"""Unit tests for the test plugin dbos.deploy.digest_key."""

import pytest
from ansible_collections.dbos.deploy.plugins.filter.keyed_digest import keyed_digest
from ansible_collections.dbos.deploy.plugins.test.digest_key import digest_key


def test_a_key_of_32_characters_or_more_is_accepted_and_keys_a_digest():
    for key in ("k" * 32, "k" * 100):
        assert digest_key(key)
        assert keyed_digest("v", key, "p").startswith("hmac-sha256:")


@pytest.mark.parametrize("key", ["", "k" * 31, None, 12345678901234567890123456789012345, ["k" * 32]])
def test_shorter_keys_and_other_types_are_not(key):
    assert not digest_key(key)
