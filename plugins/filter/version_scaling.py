# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.version_scaling: which ScaledObject scales which Deployment, on which version's work."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def version_scaling(deployments, target, scaledobject, *, version_label, retained_label, per_version=True,
                    application_version="", min_replicas=1, retained_min_replicas=0):
    """One entry per ScaledObject the keda role applies, from the application's Deployments as
    ``kubernetes.core.k8s_info`` returns them (the app role's: the current version's ``target`` and
    the retained ``<app>-<version>`` ones, labelled ``retained_label: "true"``; each labelled with its
    version under ``version_label``).

    - ``target`` is scaled by ``scaledobject``, from ``min_replicas``, on the work of its own version
      (its ``version_label``) with ``per_version``, else of ``application_version`` ("" every version);
      a target not there yet (check mode before the app role's first run) or without the label is
      counted over ``application_version`` too;
    - with ``per_version``, each retained Deployment is scaled by ``<its name>-scaledobject`` on its
      version's work, from ``retained_min_replicas`` (0: to none once drained), and that ScaledObject is
      owned by the Deployment (``owner``), so retiring the version deletes it and its HPA; except one of
      the target's own version (rolled back to), whose work the target's ScaledObject counts.

    Each entry: ``name``, ``deployment``, ``version``, ``min_replicas``, ``retained`` and ``owner`` (an
    ownerReference, or None)."""
    if not isinstance(deployments, list) or not all(isinstance(d, Mapping) for d in deployments):
        raise AnsibleFilterError("version_scaling: give the Deployments as a list of objects (k8s_info's resources)")
    for name, value in (("target", target), ("scaledobject", scaledobject), ("version_label", version_label),
                        ("retained_label", retained_label)):
        if not isinstance(value, str) or not value:
            raise AnsibleFilterError(f"version_scaling: {name} must be a non-empty string, got {value!r}")
    if not isinstance(application_version, str):
        raise AnsibleFilterError(f"version_scaling: application_version must be a string, got {application_version!r}")
    try:
        min_replicas, retained_min_replicas = int(min_replicas), int(retained_min_replicas)
    except (TypeError, ValueError):
        message = "version_scaling: min_replicas and retained_min_replicas must be whole numbers"
        raise AnsibleFilterError(message) from None

    def labels(deployment):
        return (deployment.get("metadata") or {}).get("labels") or {}

    by_name = {(d.get("metadata") or {}).get("name"): d for d in deployments}
    current = by_name.get(target)
    current_version = str(labels(current).get(version_label) or "") if current is not None else ""
    entries = [{"name": scaledobject, "deployment": target, "min_replicas": min_replicas, "retained": False,
                "version": current_version if per_version and current_version else application_version,
                "owner": None}]
    if not per_version:
        return entries
    for name in sorted(n for n in by_name if n and n != target):
        deployment = by_name[name]
        if str(labels(deployment).get(retained_label)).lower() != "true":
            continue
        version = str(labels(deployment).get(version_label) or "")
        if not version:
            raise AnsibleFilterError(f"version_scaling: the retained Deployment {name} has no {version_label} label")
        if version == current_version:  # rolled back to: the target runs that version's work (the app role drops it)
            continue
        meta = deployment["metadata"]
        entries.append({"name": f"{name}-scaledobject", "deployment": name, "version": version,
                        "min_replicas": retained_min_replicas, "retained": True,
                        "owner": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": meta.get("uid"),
                                  "blockOwnerDeletion": False}})
    return entries


class FilterModule:
    def filters(self):
        return {"version_scaling": version_scaling}
