"""The strategy ansible.cfg selects, strategy_plugins/mitogen_linear.py: Mitogen's mitogen_linear with
the list of installed collections read once per run (Mitogen's own reads it once per task; counted
with a sitecustomize that wraps ansible.collections.list.list_collection_dirs in ansible-playbook),
and without Mitogen's CPU pinning (read from a process that a module starts); and its refusal to load
where Mitogen lacks what it replaces (loaded against copies of Mitogen's modules without it)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import ansible_mitogen.affinity
import ansible_mitogen.planner
import pytest
import yaml
from ansible.errors import AnsibleError

from lab.ansible_run import ANSIBLE_PLAYBOOK, MITOGENS_OWN_STRATEGY_PLUGINS
from lab.core import REPO

SHIM = REPO / "strategy_plugins" / "mitogen_linear.py"

COUNTER = """\
import os, sys
if sys.argv and sys.argv[0].endswith("ansible-playbook"):  # the controller and its workers only
    import ansible.collections.list as listing
    real = listing.list_collection_dirs
    def list_collection_dirs(*args, **kwargs):
        with open(os.environ["COLLECTION_LISTS_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        return real(*args, **kwargs)
    listing.list_collection_dirs = list_collection_dirs
"""


@pytest.fixture
def three_tasks(tmp_path):
    """A play of three tasks, each running a collection's module; the environment that counts."""
    (tmp_path / "counter").mkdir()
    (tmp_path / "counter" / "sitecustomize.py").write_text(COUNTER)
    ini = tmp_path / "settings.ini"
    tasks = [{"name": f"Set option {option}",
              "community.general.ini_file": {"path": str(ini), "section": "s", "option": option, "value": "1"}}
             for option in ("a", "b", "c")]
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PYTHONPATH": str(tmp_path / "counter"),
           "COLLECTION_LISTS_LOG": str(tmp_path / "lists.log")}
    return playbook, ini, env, tmp_path / "lists.log"


def run(playbook: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", "-e",
                           f"ansible_python_interpreter={sys.executable}", str(playbook)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_the_configured_strategy_lists_the_collections_once_per_run(three_tasks):
    playbook, ini, env, log = three_tasks
    done = run(playbook, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert ini.read_text().split() == ["[s]", "a", "=", "1", "b", "=", "1", "c", "=", "1"]
    assert len(log.read_text().split()) == 1


def test_mitogens_own_strategy_lists_them_for_every_task(three_tasks):
    """What the change is for: with Mitogen's unchanged mitogen_linear the same play lists them 3 times."""
    playbook, _, env, log = three_tasks
    done = run(playbook, {**env, "ANSIBLE_STRATEGY_PLUGINS": MITOGENS_OWN_STRATEGY_PLUGINS})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert len(log.read_text().split()) == 3


AFFINITY_PLAY = [{"hosts": "localhost", "gather_facts": False, "tasks": [
    {"name": "Start a process and read the CPUs it may run on",
     "ansible.builtin.command": {"argv": [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]},
     "register": "cpus", "changed_when": False},
    {"name": "Show them", "ansible.builtin.debug": {"msg": "CPUS={{ cpus.stdout }}"}},
]}]


def cpus_of_a_module_child(tmp_path: Path, env: dict[str, str]) -> list[int]:
    playbook = tmp_path / "affinity.yml"
    playbook.write_text(yaml.safe_dump(AFFINITY_PLAY, sort_keys=False))
    done = run(playbook, {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), **env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return yaml.safe_load(done.stdout.split('"msg": "CPUS=', 1)[1].split('"', 1)[0])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 CPUs or more to show")
def test_processes_are_not_pinned_to_cpus(tmp_path):
    """Mitogen's own strategy confines them (on 2 CPUs, to one); the configured one leaves them all."""
    allowed = sorted(os.sched_getaffinity(0))
    assert cpus_of_a_module_child(tmp_path, {}) == allowed
    pinned = cpus_of_a_module_child(tmp_path, {"ANSIBLE_STRATEGY_PLUGINS": MITOGENS_OWN_STRATEGY_PLUGINS})
    assert set(pinned) < set(allowed)


@pytest.fixture
def mitogen_restored(monkeypatch):
    """What loading the strategy replaces in Mitogen, put back after the test."""
    for module, name in ((ansible_mitogen.planner, "_load_collections"), (ansible_mitogen.affinity, "policy")):
        monkeypatch.setattr(module, name, getattr(module, name))
    return monkeypatch


def load_strategy():
    spec = importlib.util.spec_from_file_location("mitogen_linear_under_test", SHIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_installed_mitogen_has_what_the_strategy_replaces(mitogen_restored):
    strategy = load_strategy()
    assert ansible_mitogen.planner._load_collections is strategy._load_collections
    assert type(ansible_mitogen.affinity.policy) is ansible_mitogen.affinity.Policy


def without(module: types.ModuleType, name: str, replacement=None) -> types.ModuleType:
    """A copy of ``module`` without ``name``, or with ``replacement`` in its place."""
    copy = types.ModuleType(module.__name__)
    copy.__dict__.update({k: v for k, v in vars(module).items() if k != name})
    if replacement is not None:
        setattr(copy, name, replacement)
    return copy


@pytest.mark.parametrize(("module", "name", "replacement", "missing"), [
    ("planner", "_load_collections", None, "ansible_mitogen.planner._load_collections (a function)"),
    ("planner", "invoke", lambda invocation: None, "ansible_mitogen.planner.invoke, calling _load_collections"),
    ("affinity", "Policy", None, "ansible_mitogen.affinity.Policy (a class)"),
    ("affinity", "policy", None, "ansible_mitogen.affinity.policy (a Policy)"),
], ids=["_load_collections", "invoke", "Policy", "policy"])
def test_the_strategy_refuses_a_mitogen_without_what_it_replaces(mitogen_restored, module, name, replacement,
                                                                  missing):
    real = getattr(ansible_mitogen, module)
    copy = without(real, name, replacement)
    mitogen_restored.setitem(sys.modules, real.__name__, copy)
    mitogen_restored.setattr(ansible_mitogen, module, copy)
    planner, affinity = ansible_mitogen.planner, ansible_mitogen.affinity  # as the strategy finds them

    def replaced():
        return getattr(planner, "_load_collections", None), getattr(affinity, "policy", None)

    before = replaced()
    with pytest.raises(AnsibleError, match=f"does not have: .*{re.escape(missing)}"):
        load_strategy()
    assert replaced() == before  # refused before replacing anything


def test_ansible_playbook_stops_on_the_refusal(tmp_path):
    """As a run shows it: the error, before any task, and a failed run."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import sys\nif sys.argv and sys.argv[0].endswith('ansible-playbook'):\n"
        "    import ansible_mitogen.affinity\n    del ansible_mitogen.affinity.policy\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(AFFINITY_PLAY, sort_keys=False))
    done = run(playbook, {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                          "PYTHONPATH": str(tmp_path / "site")})
    assert done.returncode != 0
    assert "does not have: ansible_mitogen.affinity.policy (a Policy)" in done.stderr, done.stderr[-2000:]
    assert "TASK [" not in done.stdout
