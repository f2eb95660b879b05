"""Fixtures shared by the role tests."""

from __future__ import annotations

import pytest
from kubernetes import client

from lab.ansible_run import AnsibleRunner


@pytest.fixture(scope="module")
def runner(lab, tmp_path_factory, request):
    """Runs playbooks on the lab for one test module, in a work folder named after it."""
    return AnsibleRunner(lab, tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture(scope="module")
def namespace(kube):
    """The application namespace, as the eks role leaves it."""
    core = client.CoreV1Api(kube)
    if "dbos" not in [n.metadata.name for n in core.list_namespace().items]:
        core.create_namespace({"metadata": {"name": "dbos"}})
    return "dbos"
