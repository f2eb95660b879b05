"""Kubernetes side of the lab: the control plane (:mod:`.cluster`), the runner that runs the add-ons'
controllers in their pods' place (:mod:`.runner`), the KEDA chart assembled from KEDA's module
(:mod:`.keda_chart`), and a discovery-cache helper."""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import tempfile
from pathlib import Path


def clear_discovery_cache(server: str) -> list[Path]:
    """Delete kubernetes.core's API discovery cache for ``server``.

    kubernetes.core caches discovery in ``$TMPDIR/k8srcp-<sha256(host[-user])>.json``. A new
    API server on a port an earlier one used would otherwise be described by the old one's cache.
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
