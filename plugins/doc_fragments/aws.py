# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The documentation this collection's AWS modules share: their connection options (amazon.aws's) and
the action group that sets them."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
notes:
  - Part of the action group C(dbos.deploy.aws), which also holds every C(amazon.aws) and
    C(community.aws) module, so one C(module_defaults) entry for C(group/dbos.deploy.aws) sets the
    connection of all of them.
"""
