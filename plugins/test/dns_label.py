# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Test dbos.deploy.dns_label: is this a valid Kubernetes namespace name (an RFC 1123 DNS label)?"""

from __future__ import annotations

from ansible_collections.dbos.deploy.plugins.module_utils.sealed_secrets import is_dns_label


def dns_label(value):
    return is_dns_label(value)


class TestModule:
    def tests(self):
        return {"dns_label": dns_label}
