"""Benchmark of the sample app on the lab PostgreSQL: /enqueue throughput beside DBOS's own direct
enqueue rate, and /metrics latency with 10,000 workflows queued.

Usage: ``make bench-sample-app`` (or ``python tests/bench/sample_app.py [--requests N] [--queued N]``).
Uses the running lab given by DBOS_LAB_STATE, else starts one for the run. Prints the numbers; it
asserts nothing (performance targets are read by people, not enforced by the test suite).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
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


def direct_enqueue_rate(client: DBOSClient, n: int) -> float:
    options = {"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": VERSION}
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda _: client.enqueue(options, 3600), range(n)))
    return n / (time.perf_counter() - t0)


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


async def metrics_latency(base: str, n: int) -> tuple[list[float], int]:
    timings, value = [], -1
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            async with session.get(f"{base}/metrics/taskQueue") as resp:
                value = (await resp.json())["queue_length"]
            timings.append((time.perf_counter() - t0) * 1000)
    return timings, value


def run(lab: Lab, requests: int, queued: int, workdir: Path) -> None:
    name, url = create_postgres_database(lab.postgres["admin_url"])
    # one worker, hour-long sleeps: what is enqueued stays ENQUEUED
    app = AppProcess(database_url=url, workdir=workdir,
                     env={"WORKER_CONCURRENCY": "1", "DBOS_APP_VERSION": VERSION}).start()
    try:
        app.wait_ready()
        client = DBOSClient(system_database_url=url, application_name="dbos-sample-app")
        direct_enqueue_rate(client, 200)  # warm-up of both paths
        asyncio.run(http_enqueue_rate(app.base, 200))
        direct = direct_enqueue_rate(client, requests)
        http = asyncio.run(http_enqueue_rate(app.base, requests))
        direct_after = direct_enqueue_rate(client, requests)  # the rate drifts as the table grows
        direct = (direct + direct_after) / 2

        count_sql = "SELECT count(*) FROM dbos.workflow_status WHERE status = 'ENQUEUED'"
        db = SystemDatabase(url=url, kind="postgres")
        missing = queued - db.query(count_sql)[0][0]
        if missing > 0:
            direct_enqueue_rate(client, missing)
        wait_for(lambda: db.query(count_sql)[0][0] >= queued, 60, f"{queued} queued workflows")
        fresh, value = asyncio.run(metrics_latency(app.base, 500))
        # Rows just inserted are not yet all-visible, so the index-only scan still visits the heap;
        # autovacuum sets the visibility map soon after. Measure both states.
        db.query("VACUUM (ANALYZE) dbos.workflow_status")
        settled, _ = asyncio.run(metrics_latency(app.base, 500))
        client.destroy()

        print(f"PostgreSQL {lab.postgres['version']}, {os.cpu_count()} cores, concurrency {CONCURRENCY}")
        print(f"direct enqueue (DBOSClient.enqueue, {CONCURRENCY} threads): {direct:8.0f} /s")
        print(f"HTTP /enqueue  ({CONCURRENCY} concurrent requests):         {http:8.0f} /s  "
              f"= {http / direct:.2f} x direct (target >= 0.80)")
        for label, timings in (("just enqueued", fresh), ("after VACUUM", settled)):
            print(f"/metrics with {value} queued, {label:13s}: p50 {statistics.median(timings):.2f} ms, "
                  f"p99 {percentile(timings, 99):.2f} ms over {len(timings)} requests (target p50 <= 5 ms)")
    finally:
        app.terminate()
        drop_postgres_database(lab.postgres["admin_url"], name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="enqueues per measured path")
    parser.add_argument("--queued", type=int, default=10_000, help="queue depth for the /metrics measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        given = os.environ.get("DBOS_LAB_STATE")
        lab = Lab.load(given) if given else Lab.up(Path(tmp) / "lab")
        try:
            run(lab, args.requests, args.queued, Path(tmp))
        finally:
            if not given:
                lab.down()


if __name__ == "__main__":
    main()
