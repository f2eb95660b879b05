# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.queue_depth_query: the queue_depth module's COUNT as one literal SQL statement."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import (
    IN_FLIGHT,
    QueueDepthError,
    literal_count_query,
)


def queue_depth_query(queue, statuses=IN_FLIGHT, schema="dbos", *, application_name=None, application_version=None,
                      limit=None, group_by=None):
    """The SQL counting ``queue``'s workflows in ``statuses``, values inlined as literals; with ``limit``
    n (an int or a string of digits) it counts at most n; with ``group_by`` ``application_version``,
    one row (version, count) per version."""
    if group_by not in (None, "", "application_version"):
        raise AnsibleFilterError(f"queue_depth_query: group_by is application_version or empty, got {group_by!r}")
    try:
        return literal_count_query(queue, list(statuses), schema, application_name=application_name or None,
                                   application_version=application_version or None,
                                   limit=None if limit in (None, "") else limit,
                                   group_by_version=group_by == "application_version")
    except QueueDepthError as e:
        raise AnsibleFilterError(f"queue_depth_query: {e}") from None


class FilterModule:
    def filters(self):
        return {"queue_depth_query": queue_depth_query}
