"""lab.procs: a process the lab started is found again by its start in clock ticks since boot, so that
``lab down`` stops what ``lab up`` started even when the machine's clock stepped in between, and never
takes a later process with the same pid for it."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import psutil
import pytest

from lab import procs


@pytest.fixture
def sleeper(tmp_path):
    """A process whose command name has a space and parentheses (it runs through a symlink so named),
    as /proc/<pid>/stat's second field shows it."""
    link = tmp_path / "a) b (c"
    link.symlink_to("/bin/sleep")
    proc = procs.spawn("sleeper", [str(link), "30"], tmp_path / "sleeper.log")
    yield proc
    procs.stop(proc, timeout=2)


def test_start_ticks_agree_with_the_wall_clock_start_time(sleeper):
    assert psutil.Process(sleeper.pid).name() == "a) b (c"
    ticks = procs.start_ticks(sleeper.pid)
    assert ticks == sleeper.start_ticks
    clock_ticks = os.sysconf("SC_CLK_TCK")
    assert abs(psutil.boot_time() + ticks / clock_ticks - psutil.Process(sleeper.pid).create_time()) < 0.05


def test_a_process_is_found_again_after_a_clock_step_and_stopped(sleeper):
    stepped = dataclasses.replace(sleeper, create_time=sleeper.create_time - 3600)  # as read before a step
    assert stepped.handle() is not None and stepped.alive()
    procs.stop(stepped, timeout=2)
    deadline = time.monotonic() + 5
    while psutil.pid_exists(sleeper.pid) and psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "still running after stop"
        time.sleep(0.05)
    assert not sleeper.alive()


def test_another_process_with_the_same_pid_is_not_taken_for_it(sleeper):
    recycled = dataclasses.replace(sleeper, start_ticks=sleeper.start_ticks - 1)
    assert recycled.handle() is None
    procs.stop(recycled, timeout=2)  # does nothing to the process that has the pid now
    assert sleeper.alive()


def test_a_record_without_ticks_still_compares_the_wall_clock_start(sleeper):
    old = dataclasses.replace(sleeper, start_ticks=None)
    assert old.alive()
    assert not dataclasses.replace(old, create_time=old.create_time - 3600).alive()


def test_no_ticks_for_a_process_that_does_not_exist():
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no pid is above pid_max
    assert procs.start_ticks(beyond) is None
