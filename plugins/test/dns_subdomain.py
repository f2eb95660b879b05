# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Test dbos.deploy.dns_subdomain: is this a valid Kubernetes Secret name (an RFC 1123 DNS subdomain)?"""

from __future__ import annotations

from ansible_collections.dbos.deploy.plugins.module_utils.sealed_secrets import is_dns_subdomain


def dns_subdomain(value):
    return is_dns_subdomain(value)


class TestModule:
    def tests(self):
        return {"dns_subdomain": dns_subdomain}
