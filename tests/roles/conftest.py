"""Fixtures shared by the role tests."""

from __future__ import annotations

import pytest
from kubernetes import client

from lab.ansible_run import AnsibleRunner
from tests.sample_app.harness import (
    create_login_role,
    create_postgres_database,
    dbos_migrate,
    drop_postgres_database,
    drop_role,
)


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


@pytest.fixture(scope="module")
def migrated_database(lab):
    """A migrated DBOS system database and its restricted app role, as the rds and migrate roles leave
    them. Roles a test appends to ``roles`` are dropped after the database, which holds their grants."""
    admin = lab.postgres["admin_url"]
    name, admin_db_url = create_postgres_database(admin)
    role, password = create_login_role(admin)
    assert dbos_migrate(admin_db_url, role).returncode == 0
    pg = lab.postgres
    roles = [role]
    yield {"name": name, "role": role, "password": password, "admin_url": admin_db_url, "roles": roles,
           "url": f"postgresql://{role}:{password}@{pg['host']}:{pg['port']}/{name}"}
    drop_postgres_database(admin, name)
    for each in roles:
        drop_role(admin, each)
