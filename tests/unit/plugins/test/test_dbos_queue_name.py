"""Unit tests for the test plugin dbos.deploy.dbos_queue_name."""

import pytest
from ansible_collections.dbos.deploy.plugins.test.dbos_queue_name import dbos_queue_name


@pytest.mark.parametrize("name", ["taskQueue", "emails-high", "q.1", "workflow queue"])
def test_names_dbos_accepts(name):
    assert dbos_queue_name(name)


@pytest.mark.parametrize("name", ["", "_dbos_internal_queue", "line\nbreak", " lead", "trail ", None, 7])
def test_names_it_does_not(name):
    assert not dbos_queue_name(name)
