# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.version_counts: psql's rows of a grouped count, summed per application version."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

_ROW = re.compile(r"^(?P<version>.*)\|(?P<count>\d+)$")


def version_counts(lines):
    """``{version: count}`` from the ``version|count`` lines ``psql -At -F '|'`` prints for
    :func:`dbos.deploy.queue_depth_query` with ``group_by=application_version``, one statement per
    queue: each version's counts summed over the queues (a NULL version is ``""``, as the
    queue_depth module names it). Other lines (psql's notices) are refused: a count read wrong
    would retire a version that still has work.

    Also sums a list of ``{version: count}`` mappings (the ``by_version`` of dbos.deploy.queue_depth,
    one per queue) the same way."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    counts = {}
    for line in lines:
        if isinstance(line, Mapping):
            for version, count in line.items():
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise AnsibleFilterError(f"version_counts: {version!r}: {count!r} is not a count")
                counts[str(version)] = counts.get(str(version), 0) + count
            continue
        if not str(line).strip():
            continue
        row = _ROW.match(str(line))
        if row is None:
            raise AnsibleFilterError(f"version_counts: {line!r} is not a 'version|count' row")
        counts[row["version"]] = counts.get(row["version"], 0) + int(row["count"])
    return counts


class FilterModule:
    def filters(self):
        return {"version_counts": version_counts}
