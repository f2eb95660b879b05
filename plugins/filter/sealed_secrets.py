# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters dbos.deploy.sealed_secrets_unsynced and dbos.deploy.secrets_unowned: how far the Sealed
Secrets controller is with the SealedSecrets a role applied."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError


def _by_name(objects, what):
    if not isinstance(objects, (list, tuple)):
        raise AnsibleFilterError(f"{what} must be a list of Kubernetes objects (k8s_info's resources), "
                                 f"got {type(objects).__name__}")
    return {(o.get("metadata") or {}).get("name"): o for o in objects}


def _names(names):
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise AnsibleFilterError(f"the names must be a list, got {names!r}")
    return list(names)


def sealed_secrets_unsynced(sealed_secrets, names):
    """The names among ``names`` whose SealedSecret the controller has not unsealed yet for the
    generation last applied: missing, not observed at its current ``metadata.generation``, or without
    a ``Synced`` condition that is ``True``. Empty when every one is unsealed."""
    found = _by_name(sealed_secrets, "sealed_secrets")
    pending = []
    for name in _names(names):
        sealed = found.get(name)
        if sealed is None:
            pending.append(name)
            continue
        status = sealed.get("status") or {}
        observed = status.get("observedGeneration")
        synced = any(c.get("type") == "Synced" and c.get("status") == "True" for c in status.get("conditions") or [])
        if observed is None or observed != sealed["metadata"].get("generation") or not synced:
            pending.append(name)
    return pending


def secrets_unowned(secrets, sealed_secrets, names):
    """The names among ``names`` whose Secret is missing or is not owned by the SealedSecret of the
    same name (an ownerReference to it, by uid): a Secret made by hand, or left over from a deleted
    SealedSecret, is not what was sealed. Empty when each Secret belongs to its SealedSecret."""
    owners = _by_name(sealed_secrets, "sealed_secrets")
    found = _by_name(secrets, "secrets")
    unowned = []
    for name in _names(names):
        sealed, secret = owners.get(name), found.get(name)
        uid = ((sealed or {}).get("metadata") or {}).get("uid")
        refs = ((secret or {}).get("metadata") or {}).get("ownerReferences") or []
        if uid is None or not any(r.get("kind") == "SealedSecret" and r.get("name") == name and r.get("uid") == uid
                                  for r in refs):
            unowned.append(name)
    return unowned


class FilterModule:
    def filters(self):
        return {"sealed_secrets_unsynced": sealed_secrets_unsynced, "secrets_unowned": secrets_unowned}
