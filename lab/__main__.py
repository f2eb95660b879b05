"""Command line for the lab: ``python -m lab {up,status,down,env}`` (see ``--help``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lab.core import DEFAULT_DIR, Lab, LabError


def cmd_up(args) -> int:
    lab = Lab.up(args.dir)
    pg = lab.postgres
    print(f"lab up in {lab.dir} ({lab.state['startup_seconds']} s)")
    print(f"  AWS (moto):          {lab.aws['endpoint']}  region {lab.aws['region']}")
    print(f"  Kubernetes {lab.kube['version']}: {lab.kube['server']}  kubeconfig {lab.kube['kubeconfig']}")
    print(f"  PostgreSQL:          {pg['host']}:{pg['port']}  user {pg['user']}  ({pg['version']})")
    print(f"  state file:          {lab.state_file}  (holds the DB password; mode 0600)")
    print("Use it:")
    print(f"  ansible-playbook -i inventories/lab ...       (reads {lab.state_file.name} via DBOS_LAB_STATE"
          " or .lab/)")
    print(f"  eval \"$(python -m lab env --dir {shlex.quote(str(lab.dir))})\"   # aws/kubectl/helm clients")
    print("  make lab-status / make lab-down")
    return 0


def _load(args) -> Lab | None:
    try:
        return Lab.load(args.dir)
    except LabError as exc:
        print(exc)
        return None


def cmd_status(args) -> int:
    lab = _load(args)
    if lab is None:
        return 1
    report = lab.health()
    for name, verdict in report.items():
        print(f"  {name:14s} {verdict}")
    healthy = all(v == "ok" for v in report.values())
    print("lab is up" if healthy else "lab is NOT healthy")
    return 0 if healthy else 1


def cmd_down(args) -> int:
    lab = _load(args)
    if lab is None:
        return 0
    stopped = lab.down()
    print("lab down; stopped:", ", ".join(stopped) or "nothing was running")
    return 0


def cmd_env(args) -> int:
    for key, value in Lab.load(args.dir).env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="The lab: moto for AWS, a real "
                                     "Kubernetes control plane (kwok's nodes) and a real PostgreSQL (test equipment).")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the lab's folder (default: .lab)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a lab (or reuse the running one)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("status", help="check each stand-in; exit 1 if any is not healthy").set_defaults(func=cmd_status)
    sub.add_parser("down", help="stop the processes the lab started").set_defaults(func=cmd_down)
    sub.add_parser("env", help="print shell exports for aws, kubectl, helm").set_defaults(func=cmd_env)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
