"""Run the sample app as a real process against a real system database, and look inside that database."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from lab.procs import free_port

APP = "dbos-sample-app"
DBOS_CLI = str(Path(sys.executable).parent / "dbos")
MIGRATE_DIR = Path(__file__).resolve().parents[2] / "sample_app" / "migrate"  # the migration image's workdir


@dataclass
class SystemDatabase:
    """A DBOS system database: a file for SQLite, a database of its own on the lab PostgreSQL."""

    url: str
    kind: str
    admin_url: str | None = None

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                return conn.execute(statement.replace("dbos.", "").replace("%s", "?"), params).fetchall()
        with psycopg.connect(self.admin_url or self.url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def statuses(self) -> dict[str, str]:
        return dict(self.query("SELECT workflow_uuid, status FROM dbos.workflow_status"))

    def count(self, status: str, queue: str = "taskQueue") -> int:
        return self.query("SELECT count(*) FROM dbos.workflow_status WHERE status = %s AND queue_name = %s",
                          (status, queue))[0][0]

    def steps(self, workflow_id: str) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT function_name FROM dbos.operation_outputs WHERE workflow_uuid = %s ORDER BY function_id",
            (workflow_id,))]


def create_postgres_database(admin_url: str) -> tuple[str, str]:
    """A fresh database on the lab server; returns (database name, admin URL for it)."""
    name = f"dbos_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


def create_login_role(admin_url: str) -> tuple[str, str]:
    """A fresh login role with no privileges, as the rds role creates the app role; (name, password)."""
    role, password = f"app_{uuid.uuid4().hex[:8]}", secrets.token_hex(12)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    return role, password


def drop_role(admin_url: str, role: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def drop_postgres_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dbos_migrate(admin_db_url: str, app_role: str | None = None) -> subprocess.CompletedProcess:
    """``dbos migrate`` as the migration image runs it: from the folder holding its dbos-config.yaml,
    with the URL in the environment only."""
    argv = [DBOS_CLI, "migrate"]
    if app_role:
        argv += ["--app-role", app_role]
    return subprocess.run(argv, cwd=MIGRATE_DIR, env={**os.environ, "DBOS_SYSTEM_DATABASE_URL": admin_db_url},
                          capture_output=True, text=True, timeout=120, check=False)


@dataclass
class AppProcess:
    """The sample app, started with ``python -m dbos_sample_app``."""

    database_url: str
    workdir: Path
    executor_id: str = "pod-a"
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self) -> AppProcess:
        self.port = self.port or free_port()
        self.log_path = self.workdir / f"app-{self.executor_id}-{time.monotonic_ns()}.log"
        env = {**os.environ, "DBOS_SYSTEM_DATABASE_URL": self.database_url, "DBOS_EXECUTOR_ID": self.executor_id,
               "DBOS_APP_VERSION": "test-v1", "PORT": str(self.port), "SHUTDOWN_GRACE_SECONDS": "20",
               **self.env}
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "dbos_sample_app"], cwd=self.workdir, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_ready(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                code, body = self.get("/healthz", timeout=2)
                if code == 200:
                    return body
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"app not ready after {timeout} s:\n{self.log()}")

    def enqueue(self, seconds: float) -> str:
        code, body = self.get(f"/enqueue/{seconds}")
        assert code == 200, body
        return body["workflow_id"]

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events


def wait_for(check, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_or_none(read, *args):
    """``read(*args)`` (a kubernetes client read), or None if the object does not exist (404)."""
    from kubernetes.client.rest import ApiException

    try:
        return read(*args)
    except ApiException as e:
        if e.status == 404:
            return None
        raise
