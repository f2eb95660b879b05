"""Unit tests for the filter dbos.deploy.version_counts."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.version_counts import version_counts


def test_each_versions_rows_are_summed_over_the_queues():
    assert version_counts(["v1|3", "v2|1", "v1|2", ""]) == {"v1": 5, "v2": 1}


def test_a_null_version_is_the_empty_key_and_a_string_is_split_in_lines():
    assert version_counts("|4\nv|1\n") == {"": 4, "v": 1}


def test_a_version_with_a_bar_in_it_keeps_it():
    assert version_counts(["a|b|7"]) == {"a|b": 7}


def test_counts_by_version_of_each_queue_are_summed_too():
    assert version_counts([{"v1": 3, "v2": 1}, {"v1": 2}, {}]) == {"v1": 5, "v2": 1}


@pytest.mark.parametrize("count", [-1, "3", None, True])
def test_a_mapping_holding_anything_but_a_count_is_refused(count):
    with pytest.raises(AnsibleFilterError, match="is not a count"):
        version_counts([{"v1": count}])


def test_no_rows_is_no_work():
    assert version_counts([]) == {}


@pytest.mark.parametrize("line", ["NOTICE: something", "v1|", "v1|-2", "v1 3"])
def test_anything_else_is_refused(line):
    with pytest.raises(AnsibleFilterError, match="is not a 'version\\|count' row"):
        version_counts([line])
