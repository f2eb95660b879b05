"""The lab's PostgreSQL, and the lab's own life cycle through the Makefile."""

from __future__ import annotations

import json
import os
import subprocess

import psutil
import psycopg

from lab.core import REPO
from lab.procs import port_open


def test_sql_through_community_postgresql(ansible, lab):
    # the lab's PostgreSQL as the lab inventory describes it (its state file's facts)
    pg = {"login_host": "{{ lab.postgres.host }}", "login_port": "{{ lab.postgres.port }}",
          "login_user": "{{ rds_master_username }}", "login_password": "{{ dbos_db_admin_password }}"}
    result = ansible.run([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Create a table", "community.postgresql.postgresql_query": {
            **pg, "db": "postgres", "query": "CREATE TABLE IF NOT EXISTS lab_smoke (n int)"}},
        {"name": "Insert", "community.postgresql.postgresql_query": {
            **pg, "db": "postgres", "query": "INSERT INTO lab_smoke VALUES (%s), (%s)", "positional_args": [1, 41]}},
        {"name": "Sum", "community.postgresql.postgresql_query": {
            **pg, "db": "postgres", "query": "SELECT sum(n) AS total, current_setting('server_version') AS v "
                                             "FROM lab_smoke"}},
    ]}])
    assert result.ok, result.explain()
    row = result.task("Sum")["query_result"][0]
    assert row["total"] == 42
    assert row["v"].startswith("16.")


def test_the_front_serves_the_server_as_rds_does_with_tls_on_5432(lab):
    """lab.pg_front: sslmode=require gets TLS (what the URLs the roles seal ask for), on port 5432 of
    the front's own loopback address; a client without TLS is relayed too; the password is checked
    by the server behind it."""
    pg, front = lab.postgres, lab.postgres["front"]
    assert front["port"] == 5432 and front["host"].startswith("127.2.")
    url = f"postgresql://{pg['user']}:{pg['password']}@{front['host']}:5432/postgres"
    with psycopg.connect(url + "?sslmode=require", autocommit=True) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT current_user, inet_server_port()").fetchone() == (pg["user"], pg["port"])
    with psycopg.connect(url + "?sslmode=disable", autocommit=True) as conn:
        assert not conn.info.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    try:
        psycopg.connect(url.replace(pg["password"], "wrong-password") + "?sslmode=require")
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        raise AssertionError("the front let a wrong password in")


def test_password_is_required_over_tcp(lab):
    pg = lab.postgres
    with psycopg.connect(pg["admin_url"]) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    wrong = pg["admin_url"].replace(pg["password"], "wrong-password")
    try:
        psycopg.connect(wrong)
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc)
    else:
        raise AssertionError("the lab PostgreSQL accepted a wrong password")


def test_make_lab_up_status_down_leaves_no_process_behind(tmp_path, lab, request):
    lab_dir = tmp_path / "cli-lab"
    # a lab of its own, whatever the session's lab is
    env = {k: v for k, v in os.environ.items() if k not in ("DBOS_LAB_STATE", "MAKEFLAGS", "MAKELEVEL")}

    def make(target):
        return subprocess.run(["make", "--no-print-directory", target, f"LAB_DIR={lab_dir}"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    up = make("lab-up")
    request.addfinalizer(lambda: make("lab-down"))  # also when an assertion below fails (a no-op after down)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((lab_dir / "state.json").read_text())
    assert oct((lab_dir / "state.json").stat().st_mode & 0o777) == "0o600"
    pids = [p["pid"] for p in state["processes"]]
    ports = [state["postgres"]["port"], int(state["aws"]["endpoint"].rsplit(":", 1)[1]),
             int(state["kube"]["server"].rsplit(":", 1)[1])]
    names = {p["name"] for p in state["processes"]}
    assert {"moto", "postgres", "pg-front", "kube:etcd", "kube:kube-apiserver", "kube:kube-controller-manager",
            "kube:kube-scheduler", "kube:kwok-controller", "kube-runner"} == names
    assert all(psutil.pid_exists(p) for p in pids)
    # a second lab beside the session's: nothing shared
    assert not set(ports) & {lab.postgres["port"], int(lab.aws["endpoint"].rsplit(":", 1)[1])}
    children = [c.pid for p in pids for c in psutil.Process(p).children(recursive=True)]
    assert children, "postgres runs its background workers as children"

    status = make("lab-status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "lab is up" in status.stdout
    assert any(line.split() == ["pg-front", "ok"] for line in status.stdout.splitlines()), status.stdout

    down = make("lab-down")
    assert down.returncode == 0, down.stdout + down.stderr
    survivors = [p for p in pids + children if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert survivors == [], [(p, *describe(p)) for p in survivors]
    assert not any(port_open(p) for p in ports)
    assert not (lab_dir / "state.json").exists()
    assert not os.path.exists(state["postgres"]["root"])

    after = make("lab-status")
    assert after.returncode != 0


def describe(pid: int) -> tuple[str, str, list[str]]:
    """What a process that outlived ``lab down`` is: its status, parent and command line."""
    try:
        p = psutil.Process(pid)
        return p.status(), f"ppid {p.ppid()}", p.cmdline()[:4]
    except psutil.NoSuchProcess:
        return "gone", "", []
