"""Unit tests for the test plugin dbos.deploy.dns_subdomain."""

import pytest
from ansible_collections.dbos.deploy.plugins.test.dns_subdomain import dns_subdomain


@pytest.mark.parametrize("name", ["dbos-app-db", "postgres-admin", "a", "conductor.api-key", "x" * 253])
def test_names_kubernetes_accepts(name):
    assert dns_subdomain(name)


@pytest.mark.parametrize("name", ["", "Bad_Name", "-x", "x-", "x" * 254, "dbos\n", "a b", None, 7])
def test_names_it_does_not(name):
    assert not dns_subdomain(name)
