"""Fixtures shared by the role tests."""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

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


def controller_mode(lab) -> dict:
    """The variables that run the roles' SQL from this machine (``*_from: controller``) against the
    lab's PostgreSQL, as a user with a tunnel to RDS would: the lab inventory leaves the roles in
    their default, cluster mode (Jobs), so the controller modes are tested with these."""
    pg, cli = lab.postgres, str(Path(sys.executable).parent / "dbos")
    return {"rds_bootstrap_from": "controller", "rds_admin_host": pg["host"], "rds_admin_port": pg["port"],
            "rds_admin_ssl_mode": "disable",
            "migrate_run_from": "controller", "migrate_admin_host": pg["host"], "migrate_admin_port": pg["port"],
            "migrate_admin_user": pg["user"], "migrate_admin_ssl_mode": "disable", "migrate_dbos_cli": cli,
            "keda_reader_from": "controller", "keda_admin_host": pg["host"], "keda_admin_port": pg["port"],
            "keda_admin_user": pg["user"], "keda_admin_ssl_mode": "disable",
            "app_queue_count_from": "controller", **queue_db_tunnel(lab, "app_queue_db")}


def handed_on(lab, *, secrets: bool = True, **instance) -> dict:
    """The facts the rds role (``rds_instance``) and, with ``secrets``, the secrets role
    (``secrets_created``) hand the later roles, as they would on the lab, for a role tested without
    them. Given as extra variables they override what a role sets: the role under test must not be
    their producer. ``instance`` overrides fields of ``rds_instance``."""
    facts = {"rds_instance": {"identifier": "dbos-app-pg", "pending": False, "endpoint": lab.postgres["front"]["host"],
                              "port": lab.postgres["front"]["port"], "database": "dbos_app",
                              "app_role": "dbos_app_role", "master_username": lab.postgres["user"], **instance}}
    if secrets:
        facts["secrets_created"] = {"admin": "postgres-admin", "app": "dbos-app-db", "conductor": "", "files": []}
    return facts


def queue_db_tunnel(lab, prefix: str) -> dict:
    """``<prefix>_host``/``_port``/``_ssl_mode`` naming the lab's PostgreSQL as this machine reaches it,
    as a tunnel to RDS would (the RDS endpoint's name resolves only in the lab's pods)."""
    pg = lab.postgres
    return {f"{prefix}_host": pg["host"], f"{prefix}_port": pg["port"], f"{prefix}_ssl_mode": "disable"}


def admin_secret(kube, namespace: str, url: str, name: str = "postgres-admin") -> None:
    """The Secret the migrate and keda roles' Jobs read the admin URL and password from (the secrets
    role seals it from the RDS endpoint; here a URL the test chooses, and its password), replaced if
    there."""
    core = client.CoreV1Api(kube)
    password = urllib.parse.unquote(urllib.parse.urlsplit(url).password or "")
    body = {"metadata": {"name": name}, "stringData": {"database-url": url, "password": password}}
    try:
        core.replace_namespaced_secret(name, namespace, body)
    except client.ApiException as e:
        if e.status != 404:
            raise
        core.create_namespaced_secret(namespace, body)


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
