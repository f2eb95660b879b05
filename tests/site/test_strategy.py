"""The strategy ansible.cfg selects, strategy_plugins/mitogen_linear.py: Mitogen's mitogen_linear with
the list of installed collections read once per run (Mitogen's own reads it once per task; counted
with a sitecustomize that wraps ansible.collections.list.list_collection_dirs in ansible-playbook),
and without Mitogen's CPU pinning (read from a process that a module starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.ansible_run import ANSIBLE_PLAYBOOK, MITOGENS_OWN_STRATEGY_PLUGINS
from lab.core import REPO

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
