# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Test dbos.deploy.image_reference: does this image reference name its registry and a tag or digest?"""

from __future__ import annotations

import re

# registry[:port]/path.../name, then :tag (Docker's tag grammar) or @sha256:<64 hex>
_REFERENCE = re.compile(r"[^\s:@/]+(:[0-9]+)?(/[^\s:@/]+)+(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})")


def image_reference(value):
    return isinstance(value, str) and _REFERENCE.fullmatch(value) is not None


class TestModule:
    def tests(self):
        return {"image_reference": image_reference}
