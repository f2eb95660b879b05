# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.queue_metrics_url: the URL of a DBOS queue's depth on the app's metrics endpoint."""

from __future__ import annotations

from urllib.parse import quote

from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import IN_FLIGHT


def _version(version):
    """``version`` as a query parameter value, None for every version (None or empty)."""
    if version is None or version == "":
        return None
    if not isinstance(version, str):
        raise AnsibleFilterError(f"queue_metrics_url: version must be a string (quote it in YAML), got {version!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in version):
        raise AnsibleFilterError(f"queue_metrics_url: version must not hold control characters, got {version!r}")
    return quote(version, safe="")


def _statuses(statuses):
    """``statuses`` as the query parameter's comma-separated value, in the fixed order of IN_FLIGHT
    (so that the URL does not change with the list's order); None if not given."""
    if statuses is None:
        return None
    if isinstance(statuses, (str, bytes, dict)) or not hasattr(statuses, "__iter__"):
        raise AnsibleFilterError(f"queue_metrics_url: statuses must be a list, got {statuses!r}")
    statuses = list(statuses)
    if not statuses or any(s not in IN_FLIGHT for s in statuses) or len(set(statuses)) != len(statuses):
        raise AnsibleFilterError(f"queue_metrics_url: statuses must be a non-empty list of {' and '.join(IN_FLIGHT)}, "
                                 f"each once, got {statuses!r}")
    return ",".join(s for s in IN_FLIGHT if s in statuses)


def queue_metrics_url(base, queue, bound_parameter="", bound=None, *, version=None, statuses=None):
    """``<base>/<queue>``, the queue name percent-encoded as one path segment (``/`` too), then the
    query ``version=<version>`` (when not empty), ``statuses=<A,B>`` (when given) and
    ``<bound_parameter>=<bound>`` (when a parameter is named), in that order: the URL KEDA's
    metrics-api trigger asks, and the one the scale report asks through a port-forward."""
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        raise AnsibleFilterError(f"queue_metrics_url: the base must be an http(s) URL, got {base!r}")
    if not isinstance(queue, str) or not queue:
        raise AnsibleFilterError(f"queue_metrics_url: the queue must be a non-empty name, got {queue!r}")
    query = []
    version = _version(version)
    if version is not None:
        query.append(f"version={version}")
    statuses = _statuses(statuses)
    if statuses is not None:
        query.append(f"statuses={statuses}")
    if bound_parameter in ("version", "statuses"):
        raise AnsibleFilterError(f"queue_metrics_url: the bound's parameter cannot be {bound_parameter}, "
                                 "a parameter of the filter's own")
    if bound_parameter:
        try:
            bound = int(bound)
        except (TypeError, ValueError):
            message = f"queue_metrics_url: {bound_parameter}= needs a whole number, got {bound!r}"
            raise AnsibleFilterError(message) from None
        if bound < 1:
            raise AnsibleFilterError(f"queue_metrics_url: {bound_parameter}= must be at least 1, got {bound}")
        query.append(f"{quote(str(bound_parameter), safe='')}={bound}")
    url = f"{base.rstrip('/')}/{quote(queue, safe='')}"
    return f"{url}?{'&'.join(query)}" if query else url


class FilterModule:
    def filters(self):
        return {"queue_metrics_url": queue_metrics_url}
