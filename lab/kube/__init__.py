"""Kubernetes side of the lab: the API emulator (:mod:`.emulator`), the protobuf body decoder it needs
(:mod:`.protobuf`), the status stand-in that plays the controllers (:mod:`.status`), and kubeconfig
and discovery-cache helpers."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import tempfile
from pathlib import Path

import yaml

# A real cluster has these before anyone creates anything.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def write_kubeconfig(path: Path, server: str, context: str = "dbos-lab") -> None:
    """A kubeconfig for the emulator. It checks no credentials; the token is there because clients
    expect a user entry."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "lab-token-not-checked"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def clear_discovery_cache(server: str) -> list[Path]:
    """Delete kubernetes.core's API discovery cache for ``server``.

    kubernetes.core caches discovery in ``$TMPDIR/k8srcp-<sha256(host[-user])>.json``. A new
    emulator on a port an earlier one used would otherwise be described by the old one's cache.
    """
    users = {None, str(os.getuid()), os.environ.get("USERNAME")}
    with contextlib.suppress(OSError):
        users.add(os.getlogin())
    with contextlib.suppress(KeyError, OSError):
        users.add(getpass.getuser())
    removed = []
    for user in users:
        cache_id = f"{server}-{user}" if user else server
        path = Path(tempfile.gettempdir()) / f"k8srcp-{hashlib.sha256(cache_id.encode()).hexdigest()}.json"
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
