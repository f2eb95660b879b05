"""Run real ``ansible-playbook`` against a lab from tests, and read each task's result.

The playbook runs with the lab inventory (``inventories/lab``), pointed at one lab through
``DBOS_LAB_STATE``, and the collection as ``make collection`` installed it.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ansible_mitogen
import yaml

from lab.core import REPO, Lab

LAB_INVENTORY = REPO / "inventories" / "lab"
# The variables the roles share, as playbooks/site.yml loads them (playbook group_vars).
SITE_VARS = REPO / "playbooks" / "group_vars" / "all.yml"
# test equipment: the callback that writes down what a run applied (PlaybookResult.applied)
RECORDING_CALLBACKS = REPO / "tests" / "callback_plugins"


@functools.cache
def working_tree_collections() -> Path:
    """A collections path in which ``dbos.deploy`` is this working tree (a symlink), so tests run the
    code as it is, not the last build installed in .collections."""
    root = Path(tempfile.mkdtemp(prefix="dbos-deploy-collections-"))
    (root / "ansible_collections" / "dbos").mkdir(parents=True)
    (root / "ansible_collections" / "dbos" / "deploy").symlink_to(REPO)
    return root


ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
# Mitogen's own strategy plugins, unchanged: as ANSIBLE_STRATEGY_PLUGINS, in place of strategy_plugins/
# (which ansible.cfg selects), to compare with them.
MITOGENS_OWN_STRATEGY_PLUGINS = str(Path(ansible_mitogen.__file__).parent / "plugins" / "strategy")
# The strategies the -vvv tests run the playbooks with, as ``env`` for AnsibleRunner.run: ansible's own, as
# users of the built collection run them (ansible.cfg and strategy_plugins/ are not in it), and the one
# ansible.cfg selects.
STRATEGIES = {"linear": {"ANSIBLE_STRATEGY": "linear"}, "mitogen_linear": {}}


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    data: dict = field(default_factory=dict)
    # (task name, object) for every object a kubernetes.core.k8s task applied (state present), as the
    # module received it: the role's templates rendered (tests/callback_plugins/applied_manifests.py)
    applied: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tasks(self, host: str = "localhost") -> list[tuple[str, dict]]:
        """(task name, result) for every task that ran on ``host``, in order."""
        return [(t["task"]["name"], t["hosts"][host])
                for play in self.data.get("plays", []) for t in play["tasks"] if host in t["hosts"]]

    def task(self, name: str, host: str = "localhost") -> dict:
        """The result of the first task called ``name`` (a role's tasks are "ROLE : name")."""
        for task_name, result in self.tasks(host):
            if task_name == name or task_name.endswith(f" : {name}"):
                return result
        raise KeyError(f"no task named {name!r}; ran: {[n for n, _ in self.tasks(host)]}")

    def durations(self) -> list[tuple[float, str]]:
        """(seconds, task name), slowest first."""
        from datetime import datetime

        def seconds(d):
            return (datetime.fromisoformat(d["end"].rstrip("Z")) - datetime.fromisoformat(d["start"].rstrip("Z"))
                    ).total_seconds()
        return sorted(((seconds(t["task"]["duration"]), t["task"]["name"])
                       for play in self.data.get("plays", []) for t in play["tasks"]), reverse=True)

    def verbose_strategy(self) -> str | None:
        """The strategy of a -vvv run with the default output, by the lines only it prints at -vvv:
        strategy_plugins/mitogen_linear.py names itself; with ansible's linear, the local connection
        announces each task (Mitogen runs the modules through a connection of its own, which does not).
        None when neither or both show: not a -vvv run, or not one of these."""
        mitogen = "Running with strategy mitogen_linear (strategy_plugins/mitogen_linear.py)" in self.stdout
        stock = "ESTABLISH LOCAL CONNECTION FOR USER" in self.stdout
        return None if mitogen == stock else "mitogen_linear" if mitogen else "linear"

    def stats(self, host: str = "localhost") -> dict:
        return self.data.get("stats", {}).get(host, {})

    @property
    def changed(self) -> int:
        return self.stats().get("changed", 0)

    def failure_messages(self) -> list[str]:
        """"task: message" of every failed task, and of every failed item of a failed loop."""
        messages = []
        for name, result in self.tasks():
            if result.get("failed"):
                messages.append(f"{name}: {result.get('msg', result)}")
                messages += [f"{name}: {item.get('msg', '')}" for item in result.get("results", [])
                             if isinstance(item, dict) and item.get("failed")]
        return messages

    def explain(self) -> str:
        """For assertion messages: the failed tasks' messages, or the raw output."""
        return "\n".join(self.failure_messages()) or (self.stdout[-3000:] + self.stderr[-3000:])


@dataclass
class AnsibleRunner:
    lab: Lab
    workdir: Path

    def env(self, extra: dict[str, str] | None = None, json_output: bool = True) -> dict[str, str]:
        env = {**os.environ, **self.lab.env(), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
               "ANSIBLE_COLLECTIONS_PATH": str(working_tree_collections()),
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0"}
        if json_output:
            env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        return {**env, **(extra or {})}

    @staticmethod
    def recording(path: Path) -> dict[str, str]:
        """The environment that makes a run write down, into ``path``, what its kubernetes.core.k8s tasks
        applied, beside the callbacks ansible.cfg enables."""
        cfg = configparser.ConfigParser()
        cfg.read(REPO / "ansible.cfg")
        enabled = [c.strip() for c in cfg.get("defaults", "callbacks_enabled", fallback="").split(",") if c.strip()]
        return {"ANSIBLE_CALLBACK_PLUGINS": str(RECORDING_CALLBACKS),
                "ANSIBLE_CALLBACKS_ENABLED": ",".join([*enabled, "applied_manifests"]),
                "DBOS_APPLIED_MANIFESTS": str(path)}

    def write_playbook(self, plays: list[dict] | str, name: str = "playbook.yml") -> Path:
        """A playbook written here runs its roles as playbooks/site.yml does: with the variables the
        roles share (playbooks/group_vars/all.yml) loaded into each play that names no vars_files."""
        path = self.workdir / name
        if not isinstance(plays, str):
            plays = yaml.safe_dump([{**play, "vars_files": play.get("vars_files", [str(SITE_VARS)])} if "hosts" in play
                                    else play for play in plays], sort_keys=False)
        path.write_text(plays)
        return path

    def run(self, playbook: Path | str | list[dict], *, extra_vars: dict | None = None, check: bool = False,
            tags: str | None = None, verbosity: int = 0, json_output: bool = True,
            env: dict[str, str] | None = None, inventory: Path = LAB_INVENTORY,
            extra_args: list[str] | None = None, timeout: float = 900) -> PlaybookResult:
        if not isinstance(playbook, Path):
            playbook = self.write_playbook(playbook)
        argv = [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(playbook)]
        if extra_vars:
            vars_file = self.workdir / f"extra-vars-{time.monotonic_ns()}.json"
            vars_file.write_text(json.dumps(extra_vars))
            argv += ["-e", f"@{vars_file}"]
        if check:
            argv.append("--check")
        if tags:
            argv += ["--tags", tags]
        if verbosity:
            argv.append("-" + "v" * verbosity)
        argv += extra_args or []
        applied = self.workdir / f"applied-{time.monotonic_ns()}.jsonl"
        t0 = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=self.env({**self.recording(applied), **(env or {})}, json_output),
                              capture_output=True, text=True, timeout=timeout, check=False)
        result = PlaybookResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
        if applied.exists():
            lines = map(json.loads, applied.read_text().splitlines())
            result.applied = [(line["task"], line["object"]) for line in lines]
        if json_output:
            # profile_tasks (ansible.cfg) prints timing lines around the JSON document
            try:
                result.data, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
            except ValueError:
                result.data = {}
        return result
