"""Starting and stopping the lab's background processes, and finding free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of ``/proc/<pid>/stat``); None when
    there is no such process. Unlike a wall-clock start time (psutil's ``create_time()``: the boot time,
    which a step of the machine's clock moves, plus these ticks), nothing but a new process changes it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # (the command name, field 2, is in parentheses and may hold spaces: count from after it; field 3 is first)
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class Proc:
    """A process the lab started: its pid and when it started, so a recycled pid is never killed.

    ``start_ticks`` tells the process from a later one with the same pid, whatever the clock did
    between ``lab up`` and ``lab down``; ``create_time`` (wall clock) is kept for display."""

    name: str
    pid: int
    create_time: float
    log: str
    start_ticks: int | None = None

    @classmethod
    def of(cls, name: str, pid: int, log: str) -> Proc:
        """The record of the running process ``pid``; raises psutil.NoSuchProcess when it is gone."""
        return cls(name=name, pid=pid, create_time=psutil.Process(pid).create_time(), log=log,
                   start_ticks=start_ticks(pid))

    def handle(self) -> psutil.Process | None:
        try:
            p = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return None
        if self.start_ticks is not None:
            same = start_ticks(self.pid) == self.start_ticks
        else:  # a record written without the ticks
            same = abs(p.create_time() - self.create_time) <= 0.5
        if not same or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p

    def alive(self) -> bool:
        return self.handle() is not None

    def to_dict(self) -> dict:
        return asdict(self)


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, **kw) -> Proc:
    """Start ``argv`` detached in its own session (so it outlives ``lab up`` and can be stopped as a
    group), with stdout and stderr in ``log``."""
    full_env = {**os.environ, **(env or {})}
    with open(log, "ab") as out:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=full_env, start_new_session=True, close_fds=True, **kw)
    return Proc.of(name, p.pid, str(log))


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_until(check, timeout: float, what: str, proc: Proc | None = None, interval: float = 0.1):
    """Poll ``check()`` until it returns a truthy value; fail with the process log if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: process exited early; its log ({proc.log}):\n{_tail(proc.log)}")
        time.sleep(interval)
    log = f"; its log ({proc.log}):\n{_tail(proc.log)}" if proc else ""
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s{log}")


def _tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: Proc, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process the lab started and everything in its process group: ``sig`` first (PostgreSQL
    wants SIGINT, its fast shutdown), SIGKILL for whatever is left after ``timeout``."""
    p = proc.handle()
    if p is None:
        return
    try:
        members = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _signal_group(proc.pid, sig)
    _, still = psutil.wait_procs(members, timeout=timeout)
    if still:
        _signal_group(proc.pid, signal.SIGKILL)
        # and each one by itself: a child in a session of its own (the runner's controllers) is not in the group
        for member in still:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(still, timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
