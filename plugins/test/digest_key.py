# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Test dbos.deploy.digest_key: is this long enough to key the digests of dbos.deploy.sealed_secret?"""

from __future__ import annotations

from ansible_collections.dbos.deploy.plugins.module_utils.sealed_secrets import is_digest_key


def digest_key(value):
    return is_digest_key(value)


class TestModule:
    def tests(self):
        return {"digest_key": digest_key}
