"""Benchmark of queue depth at 0, 10k, 100k and 1M ENQUEUED workflows: the bounded count against the
exact one, through dbos.deploy.queue_depth's code and through the sample app's /metrics, beside
DBOS's list API (``DBOSClient.list_queued_workflows``), in one run.

Usage: ``make bench-queue-depth`` (or ``python tests/bench/queue_depth.py [--levels 0,10000,...]``).

The queue is filled with rows copied from one workflow that ``DBOSClient.enqueue`` wrote (a fresh
workflow id and creation time each), by one INSERT ... SELECT into a database ``dbos migrate`` made:
enqueueing a million through DBOS would take most of an hour. The rows belong to the sample app but
to another application version than the running app's, so that it leaves them queued.

For each level, p50 and p99 (ms) of:

- ``bounded poll``: ``dbos.deploy.queue_depth``'s poll with its default bound (max_replicas 10 x
  target 2 = 20), a new connection each time, as each run of the module pays;
- ``exact poll``: the same with ``exact_count: true``;
- ``bounded count``/``exact count``: the SQL alone, on an open connection;
- ``list API``: ``list_queued_workflows`` (up to 100k; it loads every row);
- ``/metrics``, ``/metrics?max=20``: the sample app's endpoint over one kept-alive connection, as
  KEDA's HTTP client polls it.

Rows are measured once autovacuum's work is done (VACUUM ANALYZE right after filling); the bounded
poll is also measured just after the INSERT, before any vacuum. Uses the lab in DBOS_LAB_STATE,
else starts one. Prints the numbers and how they compare with the targets; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.ansible_run import working_tree_collections
from lab.core import Lab
from tests.sample_app.harness import AppProcess, create_postgres_database, dbos_migrate, drop_postgres_database

sys.path.insert(0, str(working_tree_collections()))
import ansible_collections

ansible_collections.__path__.append(str(working_tree_collections() / "ansible_collections"))
import psycopg  # noqa: E402
from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import (  # noqa: E402
    DatabaseSource,
    count_bound,
    poll,
)
from dbos import DBOSClient  # noqa: E402

APP = "dbos-sample-app"
QUEUE = "taskQueue"
TARGET, MAX_REPLICAS = 2, 10
BOUND = count_bound(TARGET, MAX_REPLICAS)
LIST_API_UP_TO = 100_000
# Targets of the issue that replaced #4's: the bounded poll at 1M, /metrics?max at 1M, and the
# bounded poll's growth from 10k to 1M.
TARGET_POLL_MS, TARGET_METRICS_MS, TARGET_GROWTH = 20.0, 5.0, 1.5


def percentiles(fn, repeat: int) -> tuple[float, float, object]:
    """(p50, p99, last value) of ``fn``'s wall time in ms over ``repeat`` calls, after one warm-up."""
    value = fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return statistics.median(samples), p99, value


def fill(url: str, count: int, created_from: int) -> None:
    """``count`` more ENQUEUED rows: copies of the template row with new ids and later creation times."""
    if count <= 0:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        # LATERAL: (f()).* would call f once per column
        conn.execute(
            "INSERT INTO dbos.workflow_status SELECT r.* "
            "FROM (SELECT * FROM dbos.workflow_status WHERE workflow_uuid = 'bench-template') t, "
            "generate_series(1, %(count)s) i, "
            "LATERAL jsonb_populate_record(NULL::dbos.workflow_status, to_jsonb(t) || jsonb_build_object("
            "'workflow_uuid', 'bench-' || (%(start)s + i), 'status', 'ENQUEUED', "
            "'created_at', t.created_at + %(start)s + i, 'updated_at', t.updated_at + %(start)s + i)) r",
            {"start": created_from, "count": count})


class Metrics:
    """GET /metrics/<queue> over one kept-alive HTTP connection."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, query: str = "") -> dict:
        self.conn.request("GET", f"/metrics/{QUEUE}{query}")
        response = self.conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return body

    def close(self) -> None:
        self.conn.close()


def run(lab: Lab, levels: list[int], workdir: Path) -> list[dict]:
    name, url = create_postgres_database(lab.postgres["admin_url"])
    assert dbos_migrate(url).returncode == 0
    client = DBOSClient(system_database_url=url, application_name=APP)
    # the template row: what DBOS writes for an enqueued workflow, of a version no running app takes
    client.enqueue({"queue_name": QUEUE, "workflow_name": "sleep_workflow", "app_version": "bench-rows",
                    "workflow_id": "bench-template"}, 3600)
    with psycopg.connect(url, autocommit=True) as conn:  # the template itself is not in flight
        conn.execute("UPDATE dbos.workflow_status SET status = 'SUCCESS' WHERE workflow_uuid = 'bench-template'")
    env = {"WORKER_CONCURRENCY": "1", "DBOS_APP_VERSION": "bench-app", "DBOS_RUN_MIGRATIONS": "false"}
    app = AppProcess(database_url=url, workdir=workdir, env=env).start()
    params = {"source": "database", "database_url": url, "queue": QUEUE, "statuses": ["ENQUEUED"], "schema": "dbos",
              "application_name": APP, "timeout": 10, "target_per_replica": TARGET, "min_replicas": 1,
              "max_replicas": MAX_REPLICAS, "exact_count": False}
    exact_params = {**params, "exact_count": True}
    rows = []
    try:
        app.wait_ready()
        metrics = Metrics(int(app.base.rsplit(":", 1)[1]))
        queued = 0
        for level in levels:
            t0 = time.perf_counter()
            fill(url, level - queued, queued)
            filled_s = time.perf_counter() - t0
            queued = max(queued, level)
            row = {"level": level, "filled in": filled_s}
            row["bounded, unvac."] = percentiles(lambda: poll(params, time.monotonic, time.sleep), 100)[:2]
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM (ANALYZE) dbos.workflow_status")
            big = level >= 1_000_000
            row["bounded poll"] = percentiles(lambda: poll(params, time.monotonic, time.sleep), 200)[:2]
            p50, p99, exact = percentiles(lambda: poll(exact_params, time.monotonic, time.sleep), 20 if big else 50)
            row["exact poll"] = (p50, p99)
            row["counted"] = exact["queue_length"]
            for label, source_params in (("bounded count", params), ("exact count", exact_params)):
                source = DatabaseSource(source_params, None if source_params["exact_count"] else BOUND)
                try:
                    row[label] = percentiles(lambda s=source: s.read()[0], 20 if big and "exact" in label else 200)[:2]
                    plan = " ".join(r[0] for r in source.conn.execute("EXPLAIN " + source.sql,
                                                                      {**source.sql_params}).fetchall())
                    row[label + " plan"] = next((k for k in ("Index Only Scan", "Bitmap", "Index Scan", "Seq Scan")
                                                 if k in plan), "?")
                finally:
                    source.close()
            if level <= LIST_API_UP_TO:
                row["list API"] = percentiles(lambda: len(client.list_queued_workflows(
                    queue_name=QUEUE, status="ENQUEUED", load_input=False, load_output=False)),
                    3 if level >= 100_000 else 10)[:2]
            row["/metrics"] = percentiles(metrics.get, 20 if big else 100)[:2]
            p50, p99, answer = percentiles(lambda: metrics.get(f"?max={BOUND}"), 300)
            row["/metrics?max"] = (p50, p99)
            row["answers"] = (metrics.get()["queue_length"], answer["queue_length"])
            rows.append(row)
            print_row(row)
        metrics.close()
    finally:
        client.destroy()
        app.terminate()
        drop_postgres_database(lab.postgres["admin_url"], name)
    return rows


COLUMNS = ["bounded poll", "bounded, unvac.", "exact poll", "bounded count", "exact count", "list API", "/metrics",
           "/metrics?max"]


def print_header() -> None:
    print(f"bound = max_replicas {MAX_REPLICAS} x target_per_replica {TARGET} = {BOUND}; times in ms, p50/p99")
    print(f"{'ENQUEUED':>9} | " + " | ".join(f"{c:>15}" for c in COLUMNS))


def print_row(row: dict) -> None:
    cells = []
    for column in COLUMNS:
        value = row.get(column)
        cells.append(f"{value[0]:>7.2f}/{value[1]:<7.2f}" if value else f"{'-':>15}")
    print(f"{row['level']:>9} | " + " | ".join(cells), flush=True)
    print(f"{'':>9}   (exact count {row['counted']} by {row['exact count plan']}, bounded by "
          f"{row['bounded count plan']}; /metrics answered {row['answers'][0]}, with max {row['answers'][1]}; "
          f"rows added in {row['filled in']:.1f} s)", flush=True)


def print_targets(rows: list[dict]) -> None:
    by_level = {row["level"]: row for row in rows}
    top, ten_k = by_level.get(1_000_000), by_level.get(10_000)
    if top is None:
        print("(no 1M level: the targets are stated at 1M)")
        return
    poll_p50, metrics_p50 = top["bounded poll"][0], top["/metrics?max"][0]
    print(f"target: bounded poll p50 at 1M <= {TARGET_POLL_MS:g} ms: {poll_p50:.2f} ms "
          f"({'met' if poll_p50 <= TARGET_POLL_MS else 'NOT met'})")
    print(f"target: /metrics?max p50 at 1M <= {TARGET_METRICS_MS:g} ms: {metrics_p50:.2f} ms "
          f"({'met' if metrics_p50 <= TARGET_METRICS_MS else 'NOT met'})")
    if ten_k is not None:
        for column in ("bounded poll", "bounded count", "/metrics?max"):
            growth = top[column][0] / ten_k[column][0]
            print(f"target: {column} p50 at 1M within {TARGET_GROWTH:g}x of 10k: {growth:.2f}x "
                  f"({'met' if growth <= TARGET_GROWTH else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0,10000,100000,1000000", help="queue depths to measure at")
    args = parser.parse_args()
    levels = sorted(int(x) for x in args.levels.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        given = os.environ.get("DBOS_LAB_STATE")
        lab = Lab.load(given) if given else Lab.up(Path(tmp) / "lab")
        try:
            print_header()
            rows = run(lab, levels, Path(tmp))
            print_targets(rows)
        finally:
            if not given:
                lab.down()


if __name__ == "__main__":
    main()
