# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.queue_metrics_url: the URL of a DBOS queue's depth on the app's metrics endpoint."""

from __future__ import annotations

from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def queue_metrics_url(base, queue, bound_parameter="", bound=None):
    """``<base>/<queue>``, the queue name percent-encoded as one path segment (``/`` too), and
    ``?<bound_parameter>=<bound>`` when a parameter is named: the URL KEDA's metrics-api trigger asks,
    and the one the scale report asks through a port-forward."""
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        raise AnsibleFilterError(f"queue_metrics_url: the base must be an http(s) URL, got {base!r}")
    if not isinstance(queue, str) or not queue:
        raise AnsibleFilterError(f"queue_metrics_url: the queue must be a non-empty name, got {queue!r}")
    url = f"{base.rstrip('/')}/{quote(queue, safe='')}"
    if bound_parameter:
        try:
            bound = int(bound)
        except (TypeError, ValueError):
            message = f"queue_metrics_url: {bound_parameter}= needs a whole number, got {bound!r}"
            raise AnsibleFilterError(message) from None
        if bound < 1:
            raise AnsibleFilterError(f"queue_metrics_url: {bound_parameter}= must be at least 1, got {bound}")
        url += f"?{quote(str(bound_parameter), safe='')}={bound}"
    return url


class FilterModule:
    def filters(self):
        return {"queue_metrics_url": queue_metrics_url}
