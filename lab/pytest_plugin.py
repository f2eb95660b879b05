"""pytest fixtures for tests that run against the lab.

* ``lab`` (session): a fresh lab for the test session, in pytest's temp folder, stopped at the end.
  With ``DBOS_LAB_STATE`` set to a running lab's state file, that lab is used instead (and left
  running). Under pytest-xdist each worker has its own session, hence its own lab: ports are free
  ports, so labs never collide.
* ``aws``: the lab's moto, emptied before the test (``/moto-api/reset``); gives boto3 clients.
* ``kube``: a kubernetes client ``ApiClient`` for the lab's API server (as its admin).
* ``ansible``: runs real playbooks against the lab (:class:`lab.ansible_run.AnsibleRunner`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import boto3
import pytest

from lab.ansible_run import AnsibleRunner
from lab.core import Lab
from lab.kube import clear_discovery_cache


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    given = os.environ.get("DBOS_LAB_STATE")
    if given:
        yield Lab.load(given)
        return
    started = Lab.up(tmp_path_factory.mktemp("lab"))
    try:
        yield started
    finally:
        started.down()


@dataclass
class Aws:
    lab: Lab

    def client(self, service: str):
        a = self.lab.aws
        return boto3.client(service, endpoint_url=a["endpoint"], region_name=a["region"],
                            aws_access_key_id=a["access_key"], aws_secret_access_key=a["secret_key"])


@pytest.fixture
def aws(lab) -> Aws:
    lab.reset_aws()
    return Aws(lab)


@pytest.fixture(scope="session")
def kube(lab):
    from kubernetes import config

    clear_discovery_cache(lab.kube["server"])
    api = config.new_client_from_config(config_file=lab.kube["kubeconfig"])
    yield api
    api.close()


@pytest.fixture
def ansible(lab, tmp_path) -> AnsibleRunner:
    return AnsibleRunner(lab, tmp_path)
