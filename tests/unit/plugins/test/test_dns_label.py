"""Unit tests for the test plugin dbos.deploy.dns_label."""

import pytest
from ansible_collections.dbos.deploy.plugins.test.dns_label import dns_label


@pytest.mark.parametrize("name", ["dbos", "a", "dbos-prod", "0abc", "x" * 63])
def test_names_kubernetes_accepts(name):
    assert dns_label(name)


@pytest.mark.parametrize("name", ["", "Bad_NS", "Dbos", "-dbos", "dbos-", "a.b", "x" * 64, "dbos\n", None, 7])
def test_names_it_does_not(name):
    assert not dns_label(name)
