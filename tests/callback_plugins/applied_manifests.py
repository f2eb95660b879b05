# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Test equipment: writes down every object that a ``kubernetes.core.k8s`` task of the run applied
(``state: present``), as the module received it (its ``definition``, the role's templates rendered), so
that a test can submit each to the API server again with strict field validation: the roles' applies
use the API's default (``Warn``), which drops an unknown field and succeeds.

Enabled by the tests only (``ANSIBLE_CALLBACK_PLUGINS`` naming this folder, ``ANSIBLE_CALLBACKS_ENABLED``
naming ``applied_manifests``); writes JSON lines ``{"task": ..., "object": ...}`` to the file that
``DBOS_APPLIED_MANIFESTS`` names. A task with ``no_log`` has no invocation to read, so it is not seen."""

from __future__ import annotations

import json
import os

import yaml
from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: applied_manifests
type: aggregate
short_description: Write down the objects kubernetes.core.k8s tasks applied (test equipment)
description:
  - Appends each object a C(kubernetes.core.k8s) task applied with C(state=present) to the file named by
    C(DBOS_APPLIED_MANIFESTS), one JSON line each.
"""

ACTIONS = {"kubernetes.core.k8s", "k8s"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "applied_manifests"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, task, result: dict) -> None:
        if task.action not in ACTIONS:
            return
        args = (result.get("invocation") or {}).get("module_args") or {}
        definition = args.get("definition")
        if args.get("state", "present") != "present" or not definition:
            return
        if isinstance(definition, str):
            definition = list(yaml.safe_load_all(definition))
        objects = definition if isinstance(definition, list) else [definition]
        with open(os.environ["DBOS_APPLIED_MANIFESTS"], "a", encoding="utf-8") as out:
            for obj in objects:
                if obj:
                    out.write(json.dumps({"task": task.get_name(), "object": obj}) + "\n")

    def v2_runner_on_ok(self, result) -> None:
        if "results" not in result._result:  # a loop's items come one by one, below
            self._record(result._task, result._result)

    def v2_runner_item_on_ok(self, result) -> None:
        self._record(result._task, result._result)
