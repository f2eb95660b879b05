"""Benchmark of playbooks/site.yml on the lab: the first converge, the idempotent re-run, and the 10
slowest tasks of each as ansible's profile_tasks callback reports them.

Usage: ``make bench-site`` (or ``python tests/bench/site.py``). Starts a fresh lab for the run, so
the first converge starts from nothing; the numbers depend on the machine (a loaded one is slower).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab

PLAYBOOK = REPO / "playbooks" / "site.yml"
RECAP_LINE = re.compile(r"^(?P<task>.+?) -+ (?P<seconds>[0-9.]+)s$")


def profile(stdout: str) -> list[tuple[float, str]]:
    """The TASKS RECAP of profile_tasks: (seconds, task), slowest first."""
    recap = stdout.split("TASKS RECAP", 1)[-1]
    # long task names wrap: join each entry back onto one line
    lines, entries = recap.splitlines()[3:], []
    buffer = ""
    for line in lines:
        buffer = f"{buffer} {line.strip()}".strip()
        match = RECAP_LINE.match(buffer)
        if match:
            entries.append((float(match["seconds"]), match["task"]))
            buffer = ""
    return entries


def report(label: str, result) -> None:
    recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", result.stdout)
    ok, changed, failed = recap.groups() if recap else ("?", "?", "?")
    print(f"{label}: {result.seconds:6.1f} s wall; tasks ok={ok} changed={changed} failed={failed}")
    for seconds, task in profile(result.stdout)[:10]:
        print(f"  {seconds:6.2f} s  {task}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab.up(Path(tmp) / "lab")
        try:
            runner = AnsibleRunner(lab, Path(tmp))
            env = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.profile_tasks",
                   "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "10", "COLUMNS": "200"}
            first = runner.run(PLAYBOOK, json_output=False, env=env)
            report("first converge", first)
            if not first.ok:
                sys.exit(first.stdout[-3000:])
            again = runner.run(PLAYBOOK, json_output=False, env=env)
            report("idempotent re-run", again)
        finally:
            lab.down()


if __name__ == "__main__":
    main()
