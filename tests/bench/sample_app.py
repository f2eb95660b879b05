"""Benchmark of the sample app on the lab PostgreSQL: /enqueue throughput beside DBOS's own direct
enqueue rate, and /metrics latency with 10,000 workflows queued.

Three enqueue paths, each from 8 concurrent callers, measured in interleaved rounds (medians
reported, so a burst of load elsewhere on the machine does not land on one path only):

- HTTP: ``GET /enqueue/3600`` on the running service;
- in-process: ``Queue.enqueue(sleep_workflow, 3600)`` in a launched DBOS process of its own, the
  very call the endpoint makes, without HTTP around it. The target (>= 0.8) is against this one:
  it isolates what the service adds;
- DBOSClient: ``DBOSClient.enqueue``, DBOS's client library; no workflow-start machinery, one
  INSERT transaction. Printed alongside for comparison.

Usage: ``make bench-sample-app`` (or ``python tests/bench/sample_app.py [--requests N] [--rounds N]
[--queued N]``). Uses the running lab given by DBOS_LAB_STATE, else starts one for the run. Prints
the numbers; it asserts nothing (performance targets are read by people, not enforced by tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dbos import DBOSClient

from lab.core import Lab
from tests.sample_app.harness import (
    AppProcess,
    SystemDatabase,
    create_postgres_database,
    drop_postgres_database,
    wait_for,
)

CONCURRENCY = 8
VERSION = "bench-v1"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def threaded_rate(call, n: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda _: call(), range(n)))
    return n / (time.perf_counter() - t0)


def client_enqueue_rate(client: DBOSClient, n: int) -> float:
    options = {"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": VERSION}
    return threaded_rate(lambda: client.enqueue(options, 3600), n)


def in_process_worker(url: str) -> None:
    """Run as a child process: launch DBOS as the service does, then answer each line "N" on stdin
    with the rate of N ``Queue.enqueue`` calls of the service's own workflow."""
    from dbos import DBOS
    from dbos_sample_app.service import sleep_workflow
    from dbos_sample_app.settings import APP_NAME, QUEUE_NAME

    DBOS(config={"name": APP_NAME, "system_database_url": url, "executor_id": "bench-in-process",
                 "application_version": VERSION})
    DBOS.launch()
    queue = DBOS.register_queue(QUEUE_NAME, worker_concurrency=1)
    for line in sys.stdin:
        print(json.dumps(threaded_rate(lambda: queue.enqueue(sleep_workflow, 3600), int(line))), flush=True)
    DBOS.destroy(workflow_completion_timeout_sec=0)


class InProcess:
    def __init__(self, url: str, workdir: Path):
        self.log = open(workdir / "in-process.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([sys.executable, __file__, "--in-process-worker", url], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)

    def rate(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the in-process enqueue worker exited; see {self.log.name}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


async def http_enqueue_rate(base: str, n: int) -> float:
    counter = iter(range(n))
    async with aiohttp.ClientSession() as session:
        async def worker():
            for _ in counter:
                async with session.get(f"{base}/enqueue/3600") as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - t0)


async def metrics_latency(base: str, n: int, queue: str = "taskQueue") -> tuple[list[float], int]:
    timings, value = [], -1
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            async with session.get(f"{base}/metrics/{queue}") as resp:
                value = (await resp.json())["queue_length"]
            timings.append((time.perf_counter() - t0) * 1000)
    return timings, value


def run(lab: Lab, requests: int, rounds: int, queued: int, workdir: Path) -> None:
    name, url = create_postgres_database(lab.postgres["admin_url"])
    # one worker, hour-long sleeps: what is enqueued stays ENQUEUED
    app = AppProcess(database_url=url, workdir=workdir,
                     env={"WORKER_CONCURRENCY": "1", "DBOS_APP_VERSION": VERSION}).start()
    in_process = None
    try:
        app.wait_ready()
        client = DBOSClient(system_database_url=url, application_name="dbos-sample-app")
        in_process = InProcess(url, workdir)
        paths = {"HTTP /enqueue": lambda n: asyncio.run(http_enqueue_rate(app.base, n)),
                 "in-process Queue.enqueue": in_process.rate,
                 "DBOSClient.enqueue": lambda n: client_enqueue_rate(client, n)}
        for measure in paths.values():  # warm-up: connection pools, prepared statements
            measure(200)

        # /metrics first, at exactly `queued` waiting (the enqueue rounds below add to the queue)
        count_sql = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'ENQUEUED'"
        db = SystemDatabase(url=url, kind="postgres")
        def topped_up() -> bool:  # the two workers each take one workflow when they poll
            missing = queued - db.query(count_sql)[0][0]
            if missing > 0:
                client_enqueue_rate(client, missing)
            return missing <= 0

        wait_for(topped_up, 60, f"{queued} queued workflows", interval=1.5)
        empty, _ = asyncio.run(metrics_latency(app.base, 500, queue="noSuchQueue"))
        fresh, value = asyncio.run(metrics_latency(app.base, 500))
        # Rows just inserted are not yet all-visible, so an index-only scan still visits the heap;
        # autovacuum sets the visibility map soon after. Measure both states.
        db.query("VACUUM (ANALYZE) dbos.workflow_status")
        settled, _ = asyncio.run(metrics_latency(app.base, 500))

        rates = {label: [] for label in paths}
        for _ in range(rounds):  # interleaved: the rate drifts as the table grows, and with the machine
            for label, measure in paths.items():
                rates[label].append(measure(requests))
        median = {label: statistics.median(values) for label, values in rates.items()}
        http, direct = median["HTTP /enqueue"], median["in-process Queue.enqueue"]
        client.destroy()

        print(f"PostgreSQL {lab.postgres['version']}, {os.cpu_count()} cores, {CONCURRENCY} concurrent callers, "
              f"{rounds} interleaved rounds of {requests} enqueues per path (median; all rounds in brackets)")
        for label, values in rates.items():
            print(f"{label:25s} {median[label]:6.0f} /s  [{' '.join(f'{v:.0f}' for v in values)}]")
        print(f"HTTP / in-process Queue.enqueue = {http / direct:.2f} (target >= 0.80)")
        print(f"HTTP / DBOSClient.enqueue       = {http / median['DBOSClient.enqueue']:.2f}")
        print(f"/metrics of an empty queue (HTTP and a query, no rows): p50 {statistics.median(empty):.2f} ms, "
              f"p99 {percentile(empty, 99):.2f} ms")
        for label, timings in (("just enqueued", fresh), ("after VACUUM", settled)):
            print(f"/metrics with {value} queued, {label:13s}: p50 {statistics.median(timings):.2f} ms, "
                  f"p99 {percentile(timings, 99):.2f} ms over {len(timings)} requests (target p50 <= 5 ms)")
    finally:
        if in_process is not None:
            in_process.close()
        app.terminate()
        drop_postgres_database(lab.postgres["admin_url"], name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="enqueues per path and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three paths")
    parser.add_argument("--queued", type=int, default=10_000, help="queue depth for the /metrics measurement")
    parser.add_argument("--in-process-worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_worker:
        in_process_worker(args.in_process_worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        given = os.environ.get("DBOS_LAB_STATE")
        lab = Lab.load(given) if given else Lab.up(Path(tmp) / "lab")
        try:
            run(lab, args.requests, args.rounds, args.queued, Path(tmp))
        finally:
            if not given:
                lab.down()


if __name__ == "__main__":
    main()
