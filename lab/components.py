"""The lab's Kubernetes components: every pinned version, and how each is built from its Go module.

This is the one place the versions are written. ``python -m lab.build`` (``make lab-build``) builds
what is missing into a cache outside the checkout, keyed by component and version, so that it is
built once per machine and reused by every later run and by a fresh clone (CI).

Everything comes from the Go module proxy, by module path and version: no other download. Modules
whose go.mod has ``replace`` directives cannot be ``go install``-ed; they are built from a small
wrapper module that requires them and repeats their replacements (see :class:`Component`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES = "1.35.4"
ETCD = "3.6.16"
KWOK = "0.8.0"
# 0.36.6: the newest the proxy serves under this module path with a checksum-database entry; 0.40.0
# moved to github.com/bitnami/sealed-secrets, which sum.golang.org does not know (404), and the build
# does not turn checksum verification off.
SEALED_SECRETS = "0.36.6"
KEDA = "2.20.2"


def cache_dir() -> Path:
    """Where built binaries live: ``$DBOS_LAB_CACHE``, else ``~/.cache/dbos-deploy/lab``."""
    given = os.environ.get("DBOS_LAB_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "dbos-deploy" / "lab"


@dataclass(frozen=True)
class Component:
    """One built unit: a Go module at a version, the packages built from it and the binaries they make.

    ``replaces``: how the wrapper module rewrites the module's requirements, ``"staging"`` for
    Kubernetes (each ``k8s.io/<name>`` staging module at its published ``v0.<minor>.<patch>``),
    ``"copy"`` to repeat the module's own ``replace`` block (KEDA), or ``None`` (no wrapper needed
    beyond the requirement). ``main``: Go source of a ``main`` package for a module that only ships
    a library entry point (etcd's server).
    """

    name: str
    module: str
    version: str
    binaries: dict[str, str]  # binary name -> package path ("." for the wrapper's own main)
    replaces: str | None = None
    main: str | None = None
    ldflags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"

    def bin_dir(self, cache: Path | None = None) -> Path:
        return (cache or cache_dir()) / self.key / "bin"

    def path(self, binary: str, cache: Path | None = None) -> Path:
        return self.bin_dir(cache) / binary


def _kubernetes_version_flags(version: str) -> tuple[str, ...]:
    """Stamp the version where ``--version`` and /version read it (unstamped: v0.0.0-master, which
    helm refuses for charts with a kubeVersion floor)."""
    major, minor, _ = version.split(".")
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.gitVersion=v{version}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean",
                  f"-X {package}.buildDate=1970-01-01T00:00:00Z"]
    return tuple(flags)


ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

// The etcd binary, as go.etcd.io/etcd/v3's main.go builds it.
func main() {
\tetcdmain.Main(os.Args)
}
"""

COMPONENTS: dict[str, Component] = {c.name: c for c in (
    Component("etcd", "go.etcd.io/etcd/server/v3", f"v{ETCD}", {"etcd": "."}, main=ETCD_MAIN,
              ldflags=(f"-X go.etcd.io/etcd/api/v3/version.GitSHA=v{ETCD}",)),
    Component("kubernetes", "k8s.io/kubernetes", f"v{KUBERNETES}",
              {"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
               "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
               "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler"},
              replaces="staging", ldflags=_kubernetes_version_flags(KUBERNETES)),
    Component("kwok", "sigs.k8s.io/kwok", f"v{KWOK}",
              {"kwok": "sigs.k8s.io/kwok/cmd/kwok", "kwokctl": "sigs.k8s.io/kwok/cmd/kwokctl"}),
    Component("sealed-secrets", "github.com/bitnami-labs/sealed-secrets", f"v{SEALED_SECRETS}",
              {"controller": "github.com/bitnami-labs/sealed-secrets/cmd/controller"},
              ldflags=(f"-X main.VERSION=v{SEALED_SECRETS}",)),
    Component("keda", "github.com/kedacore/keda/v2", f"v{KEDA}",
              {"keda": "github.com/kedacore/keda/v2/cmd/operator",
               "keda-adapter": "github.com/kedacore/keda/v2/cmd/adapter"},
              replaces="copy", ldflags=(f"-X github.com/kedacore/keda/v2/version.Version={KEDA}",)),
)}
