"""Fixtures for every test: the lab (see lab/pytest_plugin.py); system databases and sample app processes;
and this working tree importable as ``ansible_collections.dbos.deploy``, so unit tests import the modules'
code as Ansible does."""

import sys

import ansible_collections
import pytest

from lab.ansible_run import working_tree_collections
from tests.sample_app.harness import AppProcess, SystemDatabase, create_postgres_database, drop_postgres_database

pytest_plugins = ["lab.pytest_plugin"]

sys.path.insert(0, str(working_tree_collections()))
# the bundled collections (amazon.aws, ...) and this one, as one namespace package
ansible_collections.__path__.append(str(working_tree_collections() / "ansible_collections"))

@pytest.fixture
def postgres_db(lab):
    """A fresh database on the lab PostgreSQL, used by the admin role (DBOS creates its tables)."""
    name, url = create_postgres_database(lab.postgres["admin_url"])
    yield SystemDatabase(url=url, kind="postgres", admin_url=url)
    drop_postgres_database(lab.postgres["admin_url"], name)


@pytest.fixture
def sqlite_db(tmp_path):
    return SystemDatabase(url=f"sqlite:///{tmp_path / 'system.sqlite'}", kind="sqlite")


@pytest.fixture(params=["sqlite", "postgres"])
def system_db(request):
    return request.getfixturevalue(f"{request.param}_db")


@pytest.fixture
def start_app(tmp_path):
    """Start app processes; each is killed at the end of the test if still running."""
    started: list[AppProcess] = []

    def start(db: SystemDatabase | str, **kwargs) -> AppProcess:
        url = db.url if isinstance(db, SystemDatabase) else db
        app = AppProcess(database_url=url, workdir=tmp_path, **kwargs).start()
        started.append(app)
        return app

    yield start
    for app in started:
        if app.proc and app.proc.poll() is None:
            app.kill()

