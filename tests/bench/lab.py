"""Benchmark of the lab itself: how long ``Lab.up`` takes (moto, PostgreSQL, the control plane, the
runner) over a few starts, and how much memory one lab uses once ``playbooks/site.yml`` has
converged on it with the postgresql trigger (so the Sealed Secrets controller and the KEDA operator
and metrics adapter run and KEDA polls the database), by process: resident set size (RSS) and
proportional set size (PSS, shared pages divided among the processes that share them; the sum of
the PSS is what the lab costs the machine).

Usage: ``make bench-lab`` (or ``python tests/bench/lab.py [starts]``, default 3). Needs the built
components (``make lab-build``). The numbers depend on the machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil

from lab.ansible_run import AnsibleRunner
from lab.core import REPO, Lab

SETTLE_SECONDS = 30  # after the converge: KEDA polls, the controllers' caches fill


def lab_processes(lab: Lab) -> list[psutil.Process]:
    found = {}
    for proc in lab.processes:
        try:
            top = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            continue
        for p in (top, *top.children(recursive=True)):
            found[p.pid] = p
    return list(found.values())


def memory(lab: Lab) -> dict[str, tuple[float, float]]:
    """MiB of RSS and PSS by process name (PostgreSQL's backends summed as one)."""
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for proc in lab_processes(lab):
        try:
            info = proc.memory_full_info()
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if name in ("sh", "unshare"):
            continue
        by_name[name][0] += info.rss / 2**20
        by_name[name][1] += info.pss / 2**20
    return {name: (rss, pss) for name, (rss, pss) in by_name.items()}


def main() -> None:
    starts = int(sys.argv[1]) if sys.argv[1:] else 3
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        seconds = []
        for i in range(starts):
            t0 = time.monotonic()
            lab = Lab.up(Path(tmp) / f"lab-{i}")
            seconds.append(time.monotonic() - t0)
            if i < starts - 1:
                lab.down()
        print(f"lab up, {starts} starts: median {statistics.median(seconds):.1f} s, "
              f"min {min(seconds):.1f} s, max {max(seconds):.1f} s")
        try:
            runner = AnsibleRunner(lab, Path(tmp))
            t0 = time.monotonic()
            result = runner.run(REPO / "playbooks" / "site.yml", extra_vars={"keda_trigger": "postgresql"})
            if not result.ok:
                raise SystemExit(result.explain())
            print(f"site.yml (postgresql trigger): {time.monotonic() - t0:.0f} s")
            time.sleep(SETTLE_SECONDS)
            rows = sorted(memory(lab).items(), key=lambda r: -r[1][1])
            print(f"\nmemory of one lab, {SETTLE_SECONDS} s after the converge (MiB):")
            print(f"  {'process':<26} {'RSS':>8} {'PSS':>8}")
            for name, (rss, pss) in rows:
                print(f"  {name:<26} {rss:8.0f} {pss:8.0f}")
            print(f"  {'total':<26} {sum(r for r, _ in dict(rows).values()):8.0f} "
                  f"{sum(p for _, p in dict(rows).values()):8.0f}")
        finally:
            lab.down()


if __name__ == "__main__":
    main()
