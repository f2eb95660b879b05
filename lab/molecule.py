"""Run molecule scenarios (molecule/<name>) against a lab.

``python -m lab.molecule --dir .lab default keda`` runs ``molecule test -s <name>`` for each scenario,
against the running lab in ``--dir``: the scenarios read its state through ``DBOS_LAB_STATE``, use
this working tree as the collection, and keep molecule's working files under the lab's folder (not
the home directory).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from lab.ansible_run import working_tree_collections
from lab.core import REPO, Lab

BIN = Path(sys.executable).parent
SCENARIOS = ("default", "eks", "rds", "addons", "secrets", "migrate", "app", "keda")


def env(lab: Lab, scenario: str) -> dict[str, str]:
    return {**os.environ, **lab.env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DBOS_LAB_STATE": str(lab.state_file),
            "ANSIBLE_COLLECTIONS_PATH": str(working_tree_collections()),
            "MOLECULE_EPHEMERAL_DIRECTORY": str(lab.dir / "molecule" / scenario),
            "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}


def run(lab: Lab, scenario: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """``molecule test -s scenario``; its output goes to ``log`` if given, else to this process's."""
    argv = [str(BIN / "molecule"), "test", "-s", scenario]
    if log is None:
        return subprocess.run(argv, cwd=REPO, env=env(lab, scenario), check=False)
    with open(log, "w") as out:
        return subprocess.run(argv, cwd=REPO, env=env(lab, scenario), stdout=out, stderr=subprocess.STDOUT,
                              check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO / ".lab"), help="the running lab's folder")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    lab = Lab.load(args.dir)
    for scenario in args.scenarios:
        print(f"== molecule test -s {scenario}", flush=True)
        if run(lab, scenario).returncode != 0:
            print(f"== scenario {scenario} failed", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
