"""Unit tests for the filter dbos.deploy.version_scaling."""

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.version_scaling import version_scaling

LABELS = {"version_label": "dbos.dev/app-version", "retained_label": "dbos.dev/retained"}


def deployment(name, version=None, retained=False, uid="u"):
    labels = {"app.kubernetes.io/name": "dbos-app"}
    if version is not None:
        labels["dbos.dev/app-version"] = version
    if retained:
        labels["dbos.dev/retained"] = "true"
    return {"metadata": {"name": name, "uid": uid, "labels": labels}}


def test_each_version_scales_on_its_own_work_the_retained_ones_to_zero_and_owned():
    found = [deployment("dbos-app-2", "2", retained=True, uid="u2"), deployment("dbos-app", "3"),
             deployment("dbos-app-1", "1", retained=True, uid="u1"), deployment("unrelated", "9")]
    assert version_scaling(found, "dbos-app", "dbos-app-scaledobject", **LABELS) == [
        {"name": "dbos-app-scaledobject", "deployment": "dbos-app", "version": "3", "min_replicas": 1,
         "retained": False, "owner": None},
        {"name": "dbos-app-1-scaledobject", "deployment": "dbos-app-1", "version": "1", "min_replicas": 0,
         "retained": True, "owner": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dbos-app-1", "uid": "u1",
                                     "blockOwnerDeletion": False}},
        {"name": "dbos-app-2-scaledobject", "deployment": "dbos-app-2", "version": "2", "min_replicas": 0,
         "retained": True, "owner": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "dbos-app-2", "uid": "u2",
                                     "blockOwnerDeletion": False}},
    ]


def test_a_kept_deployment_of_the_version_rolled_back_to_gets_no_scaledobject():
    found = [deployment("dbos-app", "2"), deployment("dbos-app-2", "2", retained=True)]
    assert [e["name"] for e in version_scaling(found, "dbos-app", "so", **LABELS)] == ["so"]


def test_not_per_version_one_scaledobject_over_the_given_version():
    found = [deployment("dbos-app", "3"), deployment("dbos-app-2", "2", retained=True)]
    [only] = version_scaling(found, "dbos-app", "so", per_version=False, application_version="", **LABELS)
    assert (only["deployment"], only["version"]) == ("dbos-app", "")
    [only] = version_scaling(found, "dbos-app", "so", per_version=False, application_version="7", **LABELS)
    assert only["version"] == "7"


@pytest.mark.parametrize("found", [[], [deployment("dbos-app")]])
def test_a_target_not_there_yet_or_unlabelled_counts_the_given_version(found):
    [only] = version_scaling(found, "dbos-app", "so", application_version="", min_replicas="2", **LABELS)
    assert (only["version"], only["min_replicas"]) == ("", 2)


def test_a_retained_deployment_without_its_version_is_an_error():
    with pytest.raises(AnsibleFilterError, match=r"dbos-app-x has no dbos\.dev/app-version"):
        version_scaling([deployment("dbos-app-x", retained=True)], "dbos-app", "so", **LABELS)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("not a list", "t", "so"), {}, "list of objects"),
    (([], "", "so"), {}, "target must be"),
    (([], "t", "so"), {"version_label": ""}, "version_label must be"),
    (([], "t", "so"), {"application_version": None}, "application_version must be"),
    (([], "t", "so"), {"min_replicas": "one"}, "whole numbers"),
])
def test_bad_arguments(args, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message):
        version_scaling(*args, **{**LABELS, **kwargs})
