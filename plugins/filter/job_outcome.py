# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.job_outcome: how a Kubernetes Job ended (Complete, Failed), or None if it has not."""

from __future__ import annotations

from ansible_collections.dbos.deploy.plugins.module_utils.jobs import job_outcome


class FilterModule:
    def filters(self):
        return {"job_outcome": job_outcome}
