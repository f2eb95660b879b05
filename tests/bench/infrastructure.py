"""Benchmark of playbooks/infrastructure.yml (roles eks and rds) on the lab: first converge,
idempotent re-run, the order in which the long operations are requested and waited for, and the
slowest tasks.

Usage: ``make bench-infrastructure`` (or ``python tests/bench/infrastructure.py``). Uses the lab in
DBOS_LAB_STATE, else starts one for the run (its AWS stand-in is emptied first either way).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab

PLAYBOOK = REPO / "playbooks" / "infrastructure.yml"
MILESTONES = ("Request the EKS cluster", "Request the PostgreSQL instance", "Wait for the cluster",
              "Create the managed node group", "Wait for the instance", "Create the application role")


def run(lab: Lab, workdir: Path) -> None:
    lab.reset_aws()
    runner = AnsibleRunner(lab, workdir)
    extra = {"eks_kubeconfig_path": str(workdir / "kube" / "eks.yaml"),
             "eks_token_helper_path": str(workdir / "kube" / "dbos-eks-token")}
    first = runner.run(PLAYBOOK, extra_vars=extra)
    if not first.ok:
        sys.exit(f"first converge failed: {first.explain()}")
    again = runner.run(PLAYBOOK, extra_vars=extra)
    print(f"first converge: {first.seconds:6.1f} s   ({first.changed} changed)")
    print(f"re-run:         {again.seconds:6.1f} s   ({again.changed} changed)")
    names = [name.split(" : ", 1)[-1] for name, _result in first.tasks()]
    print("order of the long operations (task number in the run):")
    for step in MILESTONES:
        print(f"  {names.index(step) + 1:3d}  {step}")
    print("slowest tasks of the first converge:")
    for seconds, name in first.durations()[:10]:
        print(f"  {seconds:6.1f} s  {name}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        given = os.environ.get("DBOS_LAB_STATE")
        lab = Lab.load(given) if given else Lab.up(Path(tmp) / "lab")
        try:
            run(lab, Path(tmp))
        finally:
            if not given:
                lab.down()


if __name__ == "__main__":
    main()
