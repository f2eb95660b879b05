"""The images whose containers the lab runs as processes, each standing for the image it names.

The roles deploy four images of their own: the sample app, the reconciler beside it, the migration
image and the postgres client their Jobs use. There is no container engine here, so the pod runner
(:mod:`lab.kube.runner`) runs a container of one of these images as the process its image would run,
from this machine's files laid out as the image lays them out:

===================  ========================================  =================================================
repository           stands for                                here
===================  ========================================  =================================================
``dbos-app``         ``sample_app/Dockerfile``                 the project's venv, where the sample app is
                                                               installed; entrypoint ``dbos-sample-app``
``dbos-reconciler``  ``reconciler/Dockerfile``                 the same venv, where the reconciler is
                                                               installed; entrypoint ``dbos-reconciler``
``dbos-migrate``     ``sample_app/Dockerfile.migrate``         the ``dbos`` CLI of the same venv (the same
                                                               DBOS version as the image's lock), in a working
                                                               directory holding ``migrate/dbos-config.yaml``
``postgres``         ``postgres:16`` (Docker Official Image),  ``psql`` of the ``pgserver`` wheel, linked to the
                     for its client only                       libpq of ``psycopg-binary`` (which has TLS)
===================  ========================================  =================================================

An image is matched by its repository's last path component, whatever the registry and tag
(``<account>.dkr.ecr.<region>.amazonaws.com/dbos-app:v2`` is ``dbos-app``); every other image is left
to kwok's simulation. :func:`kwok_repository_query` is the same match, in kwok's stage selectors.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.prefix) / "bin"
# the PATH of the images' Debian base, after the image's own folders
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class Image:
    repository: str
    stands_for: str
    # the image's ENTRYPOINT (empty: none the lab can run) and CMD; its WORKDIR
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    workdir: str = "/"
    path: tuple[str, ...] = ()  # the image's own PATH folders, before the system's
    env: dict[str, str] = field(default_factory=dict)  # the image's ENV, except PATH

    def environment(self) -> dict[str, str]:
        return {"PATH": ":".join((*self.path, *SYSTEM_PATH)), **self.env}


def images(folder: Path) -> dict[str, Image]:
    """The table, by repository, with the files laid out under ``folder`` (see :func:`lay_out`)."""
    python = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    table = (
        Image("dbos-app", "sample_app/Dockerfile", entrypoint=("dbos-sample-app",), path=(str(VENV_BIN),),
              env={**python, "PORT": "8080"}),
        Image("dbos-reconciler", "reconciler/Dockerfile", entrypoint=("dbos-reconciler",), path=(str(VENV_BIN),),
              env={**python, "PORT": "8080"}),
        Image("dbos-migrate", "sample_app/Dockerfile.migrate", entrypoint=(str(VENV_BIN / "dbos"),),
              workdir=str(folder / "dbos-migrate" / "migrate"), env=python),
        Image("postgres", "postgres:16 (its psql client)", entrypoint=(),
              path=(str(folder / "postgres" / "usr" / "bin"),),
              env={"LANG": "en_US.utf8", "PGDATA": "/var/lib/postgresql/data"}),
    )
    return {image.repository: image for image in table}


REPOSITORIES = tuple(images(Path("/nonexistent")))  # what kwok leaves to the runner (cluster.stages)


def repository(image: str) -> str:
    """``registry/path/name:tag`` or ``...@sha256:...`` -> ``name``."""
    return image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def kwok_repository_query() -> str:
    """A kwok selector key (a jq query) giving each container's :func:`repository`."""
    return '.spec.containers.[].image | sub("^.*/"; "") | sub("[:@].*$"; "")'


def lay_out(folder: Path, pg_bin_dir: Path) -> None:
    """Lay out the images' files under ``folder``: the migration image's working directory, and a
    ``psql`` whose libpq is psycopg-binary's (pgserver's own is built without OpenSSL, and the Jobs
    connect to RDS with sslmode=require). psql finds its libraries by its RPATH,
    ``$ORIGIN/../../../pgserver.libs``: the copy sits where that names a folder of links."""
    import importlib.util

    migrate = folder / "dbos-migrate" / "migrate"
    migrate.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "sample_app" / "migrate" / "dbos-config.yaml", migrate / "dbos-config.yaml")

    bin_dir, libs = folder / "postgres" / "usr" / "bin", folder / "pgserver.libs"
    # the RPATH, from <folder>/postgres/usr/bin, names <folder>/pgserver.libs
    bin_dir.mkdir(parents=True, exist_ok=True)
    libs.mkdir(exist_ok=True)
    shutil.copy(pg_bin_dir / "psql", bin_dir / "psql")
    # psycopg-binary's wheel keeps its libraries beside the package (not imported: psycopg must come first)
    ssl_libs = Path(importlib.util.find_spec("psycopg_binary").origin).resolve().parent.parent / "psycopg_binary.libs"
    wanted = {p.name: p for p in (pg_bin_dir.parent.parent.parent / "pgserver.libs").iterdir()}
    provided = {p.name: p for p in ssl_libs.iterdir()}
    libpq = next(name for name in provided if name.startswith("libpq-"))
    for name, path in {**wanted, **provided}.items():
        _link(libs / name, path)
    for name in wanted:
        if name.startswith("libpq-"):  # the name psql asks for, given the libpq with TLS
            _link(libs / name, provided[libpq])


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)
