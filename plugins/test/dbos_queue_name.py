# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Test dbos.deploy.dbos_queue_name: is this a name DBOS accepts for an application queue?"""

from __future__ import annotations

from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import queue_name_problem


def dbos_queue_name(value):
    return queue_name_problem(value) is None


class TestModule:
    def tests(self):
        return {"dbos_queue_name": dbos_queue_name}
