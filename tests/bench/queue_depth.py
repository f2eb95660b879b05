"""Benchmark of dbos.deploy.queue_depth's two sources, per poll, at 0, 10k and 100k ENQUEUED
workflows, beside DBOS's list API (``DBOSClient.list_queued_workflows``) in the same run.

Usage: ``make bench-queue-depth`` (or ``python tests/bench/queue_depth.py [--levels 0,10000,100000]``).
The database source is timed with a new connection per poll (what each run of the module pays),
and split into its two parts: the connection alone, and the COUNT on an open connection (with the
plan PostgreSQL chose for it). The url source goes through the sample app's /metrics. Uses the lab in
DBOS_LAB_STATE, else starts one. Prints the numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.ansible_run import working_tree_collections
from lab.core import Lab
from tests.sample_app.harness import AppProcess, create_postgres_database, dbos_migrate, drop_postgres_database

sys.path.insert(0, str(working_tree_collections()))
import ansible_collections

ansible_collections.__path__.append(str(working_tree_collections() / "ansible_collections"))
import psycopg  # noqa: E402
from ansible_collections.dbos.deploy.plugins.module_utils.queue_depth import DatabaseSource, UrlSource  # noqa: E402
from dbos import DBOSClient  # noqa: E402

APP = "dbos-sample-app"


def timed(fn, repeat: int) -> tuple[float, object]:
    samples, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), value


def fill(client: DBOSClient, count: int) -> None:
    options = {"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": "bench"}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.enqueue(options, 3600), range(count)))


def run(lab: Lab, levels: list[int], workdir: Path) -> None:
    name, url = create_postgres_database(lab.postgres["admin_url"])
    assert dbos_migrate(url).returncode == 0
    env = {"WORKER_CONCURRENCY": "1", "DBOS_APP_VERSION": "bench", "DBOS_RUN_MIGRATIONS": "false"}
    app = AppProcess(database_url=url, workdir=workdir, env=env).start()
    client = DBOSClient(system_database_url=url, application_name=APP)
    params = {"source": "database", "database_url": url, "queue": "taskQueue", "statuses": ["ENQUEUED"],
              "schema": "dbos", "application_name": APP, "timeout": 10, "url": f"{app.base}/metrics/taskQueue",
              "value_location": "queue_length", "validate_certs": True}
    try:
        app.wait_ready()
        print(f"{'ENQUEUED':>9} | {'database (connect+count)':>24} | {'connect':>8} | {'count':>8} | "
              f"{'url (/metrics)':>14} | {'list API':>10} | speed-up")
        queued = 0
        for level in levels:
            if level > queued:
                fill(client, level - queued)
                queued = level

            def database_poll():
                source = DatabaseSource(params)
                try:
                    return source.read()[0]
                finally:
                    source.close()

            # Rows just inserted are not all-visible yet (the index-only scan visits the heap);
            # autovacuum sets the visibility map soon after: measure both states.
            for state in ("just enqueued", "after VACUUM"):
                if state == "after VACUUM":
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute("VACUUM (ANALYZE) dbos.workflow_status")
                db_ms, db_value = timed(database_poll, 21)
                connect_ms, _ = timed(lambda: psycopg.connect(url, autocommit=True).close(), 21)
                source = DatabaseSource(params)  # one connection for all polls, as with wait_until
                try:
                    source.read()
                    count_ms, _ = timed(lambda: source.read()[0], 21)  # noqa: B023 (called at once)
                    plan = " ".join(row[0] for row in source.conn.execute("EXPLAIN " + source.sql,
                                                                          source.sql_params).fetchall())
                finally:
                    source.close()
                scan = next((kind for kind in ("Index Only Scan", "Bitmap", "Index Scan", "Seq Scan") if kind in plan),
                            "?")
                url_ms, url_value = timed(lambda: UrlSource(params).read()[0], 21)
                list_ms, listed = timed(lambda: len(client.list_queued_workflows(
                    queue_name="taskQueue", status="ENQUEUED", load_input=False, load_output=False)), 5)
                print(f"{db_value:>9} | {db_ms:>21.1f} ms | {connect_ms:>5.1f} ms | {count_ms:>5.1f} ms | "
                      f"{url_ms:>11.1f} ms | {list_ms:>7.1f} ms | {list_ms / db_ms:6.1f}x   {state} "
                      f"(count by {scan}; url answered {url_value}, list {listed})")
    finally:
        client.destroy()
        app.terminate()
        drop_postgres_database(lab.postgres["admin_url"], name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0,10000,100000", help="queue depths to measure at")
    args = parser.parse_args()
    levels = sorted(int(x) for x in args.levels.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        given = os.environ.get("DBOS_LAB_STATE")
        lab = Lab.load(given) if given else Lab.up(Path(tmp) / "lab")
        try:
            run(lab, levels, Path(tmp))
        finally:
            if not given:
                lab.down()


if __name__ == "__main__":
    main()
