# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""An application's replicas and queue depth over time, as the guide's autoscaling test watches them.

:func:`watch` samples, every ``interval`` seconds, the queue depth and the Deployments' desired and
ready replicas, until the queue is empty and the replicas have come back to where they settle (or
the time is up); :func:`chart` draws the timeline in text. Both are free of the APIs they read, so
that they are unit-tested with the samples as those APIs give them.
"""

from __future__ import annotations

import math


class ReadError(Exception):
    """A read of the queue that failed; the watch records it and goes on."""


class TimelineError(Exception):
    """Why a watch could not go on; ``result`` holds the timeline so far."""

    def __init__(self, msg, result=None):
        super().__init__(msg)
        self.msg = msg
        self.result = result or {}


def replicas(deployments):
    """``{name: {"desired": spec.replicas, "ready": status.readyReplicas}}`` of Deployment objects (as
    the API serves them), and the totals."""
    by_name = {}
    for deployment in deployments:
        spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
        by_name[deployment["metadata"]["name"]] = {"desired": int(spec.get("replicas") or 0),
                                                   "ready": int(status.get("readyReplicas") or 0)}
    return (by_name, sum(d["desired"] for d in by_name.values()), sum(d["ready"] for d in by_name.values()))


def is_settled(sample, settled_replicas):
    """The queue is empty and every replica the autoscaler wants is ready, and they are as many as
    ``settled_replicas`` (its minimum, summed over the Deployments)."""
    return sample["queue_length"] == 0 and sample["desired"] == sample["ready"] == settled_replicas


def watch(read_queue, read_deployments, clock, sleep, *, interval, timeout, settled_replicas, min_seconds=0.0,
          read_failures=5):
    """Sample until :func:`is_settled` (after ``min_seconds`` at least, and after the queue was seen
    non-empty or the replicas above where they settle: the load may not have reached the queue at
    the first sample) or ``timeout``. Returns the result the module gives.

    A queue that cannot be read (``read_queue`` raises :class:`ReadError`: a port-forward whose pod was
    scaled in, say) is a sample with ``queue_length`` None, and the watch goes on, unless that happens
    ``read_failures`` times in a row."""
    start = clock()
    timeline = []
    busy = False
    failed = 0
    while True:
        t = clock() - start
        try:
            queue_length, error = read_queue(), None
            failed = 0
        except ReadError as e:
            queue_length, error = None, str(e)
            failed += 1
        by_name, desired, ready = replicas(read_deployments())
        sample = {"t": round(t, 1), "queue_length": queue_length, "desired": desired, "ready": ready,
                  "deployments": by_name}
        timeline.append(sample)
        if failed >= read_failures:
            raise TimelineError(f"the queue could not be read {failed} times in a row: {error}",
                                summary(timeline, settled=False))
        busy = busy or (queue_length or 0) > 0 or desired > settled_replicas
        if busy and t >= min_seconds and is_settled(sample, settled_replicas):
            return summary(timeline, settled=True)
        if t >= timeout:
            result = summary(timeline, settled=False)
            raise TimelineError(f"not settled within {timeout:g} s: last queue length {queue_length}, "
                                f"{desired} desired and {ready} ready replicas (settled at {settled_replicas})",
                                result)
        sleep(max(0.0, min(interval, start + timeout - clock())))


def summary(timeline, settled):
    """The timeline and what a reader looks for in it: the peaks, when they were reached, when the
    queue drained and when the replicas settled."""
    peak_desired = max((s["desired"] for s in timeline), default=0)
    peak_ready = max((s["ready"] for s in timeline), default=0)
    peak_queue = max((s["queue_length"] or 0 for s in timeline), default=0)
    first = {}
    for sample in timeline:
        if sample["desired"] == peak_desired:
            first.setdefault("desired", sample["t"])
        if sample["ready"] == peak_ready:
            first.setdefault("ready", sample["t"])
    drained = None
    for sample in timeline:
        if sample["queue_length"] is None:
            continue
        if sample["queue_length"] > 0:
            drained = None
        elif drained is None:
            drained = sample["t"]
    return {"timeline": timeline, "settled": settled, "peak_queue_length": peak_queue, "peak_desired": peak_desired,
            "peak_ready": peak_ready, "peak_desired_at": first.get("desired"), "peak_ready_at": first.get("ready"),
            "drained_at": drained if peak_queue else None,
            "settled_at": timeline[-1]["t"] if settled and timeline else None}


def chart(timeline, width=72, height=12):
    """Queue depth (``q``), desired replicas (``D``) and ready replicas (``r``) over time, one text line
    per row, with the value axis on the left and the seconds below (``*`` where two or more meet)."""
    if not timeline:
        return ["(no samples)"]
    width, height = max(10, int(width)), max(3, int(height))
    end = max(timeline[-1]["t"], 1e-9)
    top = max(1, *(max(s["queue_length"] or 0, s["desired"], s["ready"]) for s in timeline))
    grid = [[" "] * width for _row in range(height + 1)]

    def row(value):
        return height - round(value * height / top)

    for column in range(width):
        at = end * column / (width - 1)
        sample = min((s for s in timeline if s["t"] <= at + 1e-9), key=lambda s: at - s["t"], default=timeline[0])
        for key, mark in (("queue_length", "q"), ("desired", "D"), ("ready", "r")):
            if sample[key] is None:  # not read
                continue
            cell = grid[row(sample[key])]
            cell[column] = mark if cell[column] in (" ", mark) else "*"
    label = len(str(top))
    lines = []
    for index, cells in enumerate(grid):
        value = top * (height - index) / height
        shown = str(round(value)) if index % max(1, height // 4) == 0 or index == height else ""
        lines.append(f"{shown:>{label}} |" + "".join(cells).rstrip())
    lines.append(" " * label + " +" + "-" * width)
    ticks, free = [" "] * (width + 8), 0  # five ticks, each left out where it would touch the one before
    for k in range(5):
        column = round((width - 1) * k / 4)
        text = f"{end * k / 4:.0f}s"
        start = min(column, width + 8 - len(text))
        if start >= free:
            ticks[start:start + len(text)] = text
            free = start + len(text) + 1
    lines.append(" " * (label + 2) + "".join(ticks).rstrip())
    lines.append(" " * (label + 2) + "q queue depth   D desired replicas   r ready replicas   * several")
    return lines


def table(timeline):
    """The timeline as text lines: seconds since start, queue depth, desired and ready replicas, and
    each Deployment's desired/ready when there are several."""
    names = sorted({name for s in timeline for name in s["deployments"]})
    several = len(names) > 1
    head = f"{'t (s)':>7}  {'queue':>5}  {'desired':>7}  {'ready':>5}" + ("  " + "  ".join(names) if several else "")
    lines = [head]
    for s in timeline:
        queue = "?" if s["queue_length"] is None else s["queue_length"]
        line = f"{s['t']:>7.1f}  {queue:>5}  {s['desired']:>7}  {s['ready']:>5}"
        if several:
            line += "  " + "  ".join(f"{_pair(s['deployments'].get(n)):>{len(n)}}" for n in names)
        lines.append(line)
    return lines


def _pair(counts):
    return "-" if counts is None else f"{counts['desired']}/{counts['ready']}"


def positive(value, name):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise TimelineError(f"{name} must be a positive number of seconds, got {value!r}")
    return value
