# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.keyed_digest: an HMAC-SHA256 of a value, keyed with a vaulted key."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.module_utils.sealed_secrets import SealingError
from ansible_collections.dbos.deploy.plugins.module_utils.sealed_secrets import keyed_digest as _keyed_digest


def keyed_digest(value, key, purpose):
    """``hmac-sha256:<hex>`` of ``value`` for ``purpose``, keyed with ``key`` (the module's own digest)."""
    if not isinstance(purpose, str) or not purpose:
        raise AnsibleFilterError("keyed_digest: purpose must be a non-empty string")
    try:
        return _keyed_digest(key, purpose, value)
    except (SealingError, TypeError, ValueError) as e:
        raise AnsibleFilterError(f"keyed_digest: {e}") from None


class FilterModule:
    def filters(self):
        return {"keyed_digest": keyed_digest}
