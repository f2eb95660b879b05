"""Unit tests for the test plugin dbos.deploy.image_reference."""

import pytest
from ansible_collections.dbos.deploy.plugins.test.image_reference import image_reference

DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize("ref", [
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/dbos-app:1",
    "registry.example.com:5000/team/dbos-reconciler:0.1.0",
    f"ghcr.io/org/app@{DIGEST}",
    "r/a:" + "v" * 128,
])
def test_references_it_accepts(ref):
    assert image_reference(ref)


@pytest.mark.parametrize("ref", [
    "dbos-app", "dbos-app:1", "registry/app", "registry/app:", "registry/app:-x", "registry/app:" + "v" * 129,
    "registry/app@sha256:abc", "registry/ app:1", "registry/app:1\n", "", None, 7,
])
def test_references_it_refuses(ref):
    assert not image_reference(ref)
