"""Benchmark of playbooks/site.yml on the lab: the first converge, the idempotent re-run, and the 10
slowest tasks of each as ansible's profile_tasks callback reports them, with the strategy ansible.cfg
selects (strategy_plugins/mitogen_linear.py). Then the re-run again with Mitogen's own, unchanged
strategy, and once more with ansible's stock ``linear`` strategy, with every module run timed: how
many times a module's Python process ran, and the wall and CPU time spent in those processes, apart
from the controller's.

Usage: ``make bench-site`` (or ``python tests/bench/site.py``). Starts a fresh lab for the run, so
the first converge starts from nothing; the numbers depend on the machine (a loaded one is slower).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.ansible_run import MITOGENS_OWN_STRATEGY_PLUGINS, AnsibleRunner
from lab.core import REPO, Lab

PLAYBOOK = REPO / "playbooks" / "site.yml"
RECAP_LINE = re.compile(r"^(?P<task>.+?) -+ (?P<seconds>[0-9.]+)s$")

# The interpreter for the timed run: it runs each module's Python process (with pipelining, the
# AnsiballZ script arrives on stdin) and appends one JSON line per run to a log. It starts with -IS, so
# its own start-up (a few ms) adds little; the times logged are those of the module's process alone.
TIMING_INTERPRETER = """#!{python} -IS
import json, re, resource, subprocess, sys, time
script = open(sys.argv[1], "rb").read() if sys.argv[1:] else sys.stdin.buffer.read()
name = re.search(rb"module_fqn=['\\"]([\\w.]+)", script)
before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
proc = subprocess.run([{python!r}, *sys.argv[1:]], input=None if sys.argv[1:] else script, check=False)
after = resource.getrusage(resource.RUSAGE_CHILDREN)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"module": name[1].decode() if name else "?", "wall": time.monotonic() - t0,
                          "cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime}}) + "\\n")
sys.exit(proc.returncode)
"""


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


def report(label: str, result, slowest: int = 10) -> None:
    recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", result.stdout)
    ok, changed, failed = recap.groups() if recap else ("?", "?", "?")
    print(f"{label}: {result.seconds:6.1f} s wall; tasks ok={ok} changed={changed} failed={failed}")
    for seconds, task in profile(result.stdout)[:slowest]:
        print(f"  {seconds:6.2f} s  {task}")


def module_runs(runner: AnsibleRunner, workdir: Path, env: dict[str, str]) -> None:
    """The re-run with the stock strategy, through TIMING_INTERPRETER: module runs by module, and the rest.

    (With Mitogen, modules run inside one long-lived process, which this interpreter would time once.)
    """
    log, interpreter = workdir / "module-runs.jsonl", workdir / "timed-python"
    interpreter.write_text(TIMING_INTERPRETER.format(python=sys.executable, log=str(log)))
    interpreter.chmod(0o755)
    timed = runner.run(PLAYBOOK, json_output=False, env={**env, "ANSIBLE_STRATEGY": "linear"},
                       extra_vars={"ansible_python_interpreter": str(interpreter)})
    if not timed.ok:
        sys.exit(timed.stdout[-3000:])
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    wall, cpu = sum(r["wall"] for r in runs), sum(r["cpu"] for r in runs)
    print(f"re-run with the stock linear strategy, each module run timed: {timed.seconds:.1f} s wall; "
          f"{len(runs)} module runs took {wall:.1f} s wall, {cpu:.1f} s CPU ({wall / len(runs):.2f} s each); "
          f"the controller and the tasks that run no module: {timed.seconds - wall:.1f} s")
    by_module: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by_module[r["module"].removeprefix("ansible_collections.").replace(".plugins.modules.", ".")].append(r["wall"])
    for name, walls in sorted(by_module.items(), key=lambda item: -sum(item[1]))[:10]:
        print(f"  {sum(walls):6.2f} s  {len(walls):2d} x {sum(walls) / len(walls):.2f} s  {name}")


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
            upstream = runner.run(PLAYBOOK, json_output=False,
                                  env={**env, "ANSIBLE_STRATEGY_PLUGINS": MITOGENS_OWN_STRATEGY_PLUGINS})
            report("re-run with Mitogen's own mitogen_linear", upstream, slowest=0)
            module_runs(runner, Path(tmp), env)
        finally:
            lab.down()


if __name__ == "__main__":
    main()
