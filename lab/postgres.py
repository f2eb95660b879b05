"""PostgreSQL 16 stand-in: a real server from the ``pgserver`` wheel's binaries.

Unlike ``pgserver.get_server`` (unix socket only, trust auth), the lab's server listens on
127.0.0.1:PORT with password (SCRAM) authentication for TCP, the way RDS is reached: roles and
modules connect to it with a host, a port, a user and a password. The unix socket, in the server's
private folder, stays passwordless for the lab's own administration.

PostgreSQL refuses to run as root. When the lab runs as root (CI does), the server runs as the
system user ``dboslab`` (created if missing), from a folder under the system temp dir that this
user can reach; its binaries are copied there when the installed ones sit below a private folder.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from lab import procs

SYSTEM_USER = "dboslab"
ADMIN_USER = "postgres"
# The lab's data is thrown away after the run: durability of the server itself buys nothing here.
SERVER_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "200"}


def install_dir() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall"


def _reachable_by_all(path: Path) -> bool:
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def prepare(lab_dir: Path) -> tuple[Path, Path, pwd.struct_passwd | None]:
    """Choose the server's folder and binaries; returns (root folder, bin folder, user to run as)."""
    if os.geteuid() != 0:
        root = lab_dir / "postgres"
        root.mkdir(parents=True, exist_ok=True)
        return root, install_dir() / "bin", None
    user = _system_user()
    root = Path(tempfile.mkdtemp(prefix="dbos-lab-pg-"))
    root.chmod(0o755)
    binaries = install_dir()
    if not _reachable_by_all(binaries):
        shutil.copytree(binaries, root / "pginstall", symlinks=True)
        binaries = root / "pginstall"
    return root, binaries / "bin", user


def start(lab_dir: Path, port: int, log: Path) -> tuple[procs.Proc, dict]:
    """initdb and start a server on 127.0.0.1:``port``; returns the process and its connection facts."""
    root, bindir, user = prepare(lab_dir)
    data, sockets = root / "data", root / "sockets"
    password = secrets.token_urlsafe(24)
    run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    pwfile = root / "initdb-password"
    pwfile.write_text(password + "\n")
    sockets.mkdir()
    if user:
        for p in (root, pwfile, sockets):
            os.chown(p, user.pw_uid, user.pw_gid)
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", ADMIN_USER, "--pwfile", str(pwfile),
                        "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale"],
                       check=True, capture_output=True, text=True, **run_as)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed:\n{exc.stdout}\n{exc.stderr}") from exc
    finally:
        pwfile.unlink()
    argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1"]
    for key, value in SERVER_SETTINGS.items():
        argv += ["-c", f"{key}={value}"]
    proc = procs.spawn("postgres", argv, log, **run_as)
    facts = {
        "host": "127.0.0.1", "port": port, "user": ADMIN_USER, "password": password, "database": "postgres",
        "admin_url": f"postgresql://{ADMIN_USER}:{password}@127.0.0.1:{port}/postgres",
        # for the restricted application role the roles create (a vault secret on AWS)
        "app_role_password": secrets.token_urlsafe(24),
        # for the keda role's read-only role (postgresql trigger)
        "queue_reader_password": secrets.token_urlsafe(24),
        "root": str(root), "socket_dir": str(sockets), "bin_dir": str(bindir),
        "version": _version(bindir),
    }
    procs.wait_until(lambda: _ready(bindir, sockets, port), 30, "postgres", proc)
    return proc, facts


def _version(bindir: Path) -> str:
    return subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _ready(bindir: Path, sockets: Path, port: int) -> bool:
    ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", str(sockets), "-p", str(port)], check=False)
    return ready.returncode == 0 \
        and procs.port_open(port)


def cleanup(facts: dict, lab_dir: Path) -> None:
    """Remove the server's folder (it may live outside the lab folder, see :func:`prepare`)."""
    root = Path(facts.get("root", ""))
    if root.name and root.exists():
        shutil.rmtree(root, ignore_errors=True)
