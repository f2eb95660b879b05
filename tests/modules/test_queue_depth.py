"""dbos.deploy.queue_depth against the lab PostgreSQL and the running sample app, with real workflows."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading

import psycopg
import pytest
from ansible_collections.dbos.deploy.plugins.module_utils import queue_depth as qd
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dbos import DBOSClient

from tests.sample_app.harness import dbos_migrate, wait_for


def depth_play(**args) -> list[dict]:
    return [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "Depth", "dbos.deploy.queue_depth": args}]}]


def run_depth(ansible, check=False, verbosity=0, **args):
    result = ansible.run(depth_play(**args), check=check, verbosity=verbosity)
    return result, (result.task("Depth") if result.data else {})


@pytest.fixture
def migrated_db(postgres_db):
    migrated = dbos_migrate(postgres_db.admin_url)
    assert migrated.returncode == 0, migrated.stderr
    return postgres_db


def enqueue(db, count, version, app="dbos-sample-app", queue="taskQueue", *, seconds=3600):
    client = DBOSClient(system_database_url=db.url, application_name=app)
    try:
        for _ in range(count):
            client.enqueue({"queue_name": queue, "workflow_name": "sleep_workflow", "app_version": version}, seconds)
    finally:
        client.destroy()


def test_database_source_counts_real_workflows(ansible, migrated_db):
    enqueue(migrated_db, 4, "v1")
    enqueue(migrated_db, 3, "v2")
    enqueue(migrated_db, 2, "v1", app="other-app")
    result, depth = run_depth(ansible, database_url=migrated_db.url, queue="taskQueue",
                              application_name="dbos-sample-app", target_per_replica=2)
    assert result.ok, result.explain()
    assert (depth["queue_length"], depth["desired_replicas"], depth["changed"]) == (7, 4, False)  # ceil(7/2)

    result, grouped = run_depth(ansible, database_url=migrated_db.url, queue="taskQueue",
                                statuses=["ENQUEUED", "PENDING"], group_by="application_version")
    assert result.ok, result.explain()
    assert grouped["by_version"] == {"v1": 6, "v2": 3}
    assert grouped["queue_length"] == 9

    result, v2 = run_depth(ansible, database_url=migrated_db.url, application_name="dbos-sample-app",
                           application_version="v2", min_replicas=0)
    assert (v2["queue_length"], v2["desired_replicas"]) == (3, 2)
    assert v2["elapsed_ms"] >= 0

    checked = ansible.run(depth_play(database_url=migrated_db.url), check=True)
    assert checked.ok and checked.task("Depth")["queue_length"] == 9


def depth_plays(cases: dict[str, dict]) -> list[dict]:
    """One play, one dbos.deploy.queue_depth task per case (named after it); failures do not stop it."""
    return [{"hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": name, "dbos.deploy.queue_depth": args, "ignore_errors": True}
                       for name, args in cases.items()]}]


def test_database_source_counts_only_up_to_the_bound(ansible, migrated_db):
    """25 real workflows queued. For bounds below, at and above 25 the bounded count asks for the
    replicas the exact count asks for, and says whether its length is exact; it reads at most the
    bound's number of index entries."""
    enqueue(migrated_db, 25, "v1")
    settings = {  # (target_per_replica, max_replicas): bound
        "below": (2, 10),  # 20
        "at": (5, 5),      # 25
        "above": (2, 13),  # 26
        "one": (1, 1),     # 1
    }
    cases = {}
    for label, (target, most) in settings.items():
        for exact in (False, True):
            cases[f"{label} exact={exact}"] = {"database_url": migrated_db.url, "target_per_replica": target,
                                               "max_replicas": most, "min_replicas": 0, "exact_count": exact}
    cases["wait for at most 30"] = {"database_url": migrated_db.url, "target_per_replica": 1, "max_replicas": 1,
                                    "wait_until": {"queue_length_at_most": 30}, "wait_timeout": 0}
    cases["wait for at most 3"] = {"database_url": migrated_db.url, "wait_until": {"queue_length_at_most": 3},
                                   "wait_timeout": 0}
    result = ansible.run(depth_plays(cases))
    got = {name: result.task(name) for name in cases}
    readings = {name: (r.get("queue_length"), r.get("queue_length_exact"), r.get("count_bound"),
                       r.get("desired_replicas")) for name, r in got.items()}
    assert readings == {
        "below exact=False": (20, False, 20, 10), "below exact=True": (25, True, None, 10),
        "at exact=False": (25, False, 25, 5), "at exact=True": (25, True, None, 5),
        "above exact=False": (25, True, 26, 13), "above exact=True": (25, True, None, 13),
        "one exact=False": (1, False, 1, 1), "one exact=True": (25, True, None, 1),
        "wait for at most 30": (25, True, 31, 1),
        "wait for at most 3": (20, False, 20, 10),
    }, readings
    assert got["wait for at most 3"]["failed"]
    assert "still has at least 20 workflows (more than 3)" in got["wait for at most 3"]["msg"]
    assert all(not r.get("failed") for name, r in got.items() if name != "wait for at most 3"), got

    # what the bounded count reads: 20 entries of DBOS's in-flight index, of the 25
    sql, params = qd.count_query(["ENQUEUED"], limit=20)
    with psycopg.connect(migrated_db.url) as conn:
        plan = [row[0] for row in conn.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql,
                                               {**params, "queue": "taskQueue"}).fetchall()]
    scan = next(line for line in plan if "Scan" in line)
    assert "Index Only Scan using idx_workflow_status_in_flight_v2" in scan and "rows=20 " in scan, plan


def test_url_source_and_the_apps_bound(ansible, postgres_db, start_app):
    """The app's /metrics?max=N counts up to N; the module takes a lower bound that is enough to decide
    on, and refuses one that is not."""
    app = start_app(postgres_db, env={"WORKER_CONCURRENCY": "1"})
    app.wait_ready()
    for _ in range(8):
        app.enqueue(3600)
    wait_for(lambda: postgres_db.count("PENDING") == 1, 30, "one workflow running")
    metrics = f"{app.base}/metrics/taskQueue"
    cases = {
        "exact": {"source": "url", "url": metrics, "target_per_replica": 1, "max_replicas": 4},
        "bound 4": {"source": "url", "url": f"{metrics}?max=4", "target_per_replica": 1, "max_replicas": 4},
        "bound 3": {"source": "url", "url": f"{metrics}?max=3", "target_per_replica": 1, "max_replicas": 4},
        "bound 4, exact asked": {"source": "url", "url": f"{metrics}?max=4", "exact_count": True},
        "bad bound": {"source": "url", "url": f"{metrics}?max=0"},
    }
    result = ansible.run(depth_plays(cases))
    got = {name: result.task(name) for name in cases}
    assert (got["exact"]["queue_length"], got["exact"]["queue_length_exact"], got["exact"]["desired_replicas"]) == \
        (7, True, 4)
    assert (got["bound 4"]["queue_length"], got["bound 4"]["queue_length_exact"], got["bound 4"]["desired_replicas"]) \
        == (4, False, 4)
    assert got["bound 3"]["failed"]
    assert "counted only up to 3" in got["bound 3"]["msg"] and "max= to at least 4" in got["bound 3"]["msg"]
    assert got["bound 4, exact asked"]["failed"] and "not the exact count" in got["bound 4, exact asked"]["msg"]
    assert got["bad bound"]["failed"] and "400" in got["bad bound"]["msg"], got["bad bound"]["msg"]


def test_url_source_reads_the_sample_apps_metrics(ansible, postgres_db, start_app):
    app = start_app(postgres_db, env={"WORKER_CONCURRENCY": "1"})
    app.wait_ready()
    for _ in range(7):
        app.enqueue(3600)
    wait_for(lambda: postgres_db.count("PENDING") == 1, 30, "one workflow running")
    result, depth = run_depth(ansible, source="url", url=f"{app.base}/metrics/taskQueue", target_per_replica=1)
    assert result.ok, result.explain()
    assert depth["queue_length"] == postgres_db.count("ENQUEUED") == 6
    assert depth["desired_replicas"] == 6


def test_wait_until_drained_succeeds(ansible, migrated_db, start_app):
    """The module polls a queue that is not empty when it starts, and returns once the app has drained it.

    The work is enqueued with no app running, and the app starts only after the module's first count has
    been answered (its connection shows the count as its last query), so the wait is seen to wait.
    """
    enqueue(migrated_db, 6, "test-v1", seconds=0.5)
    outcome = {}

    def wait_for_drain():
        outcome["result"], outcome["depth"] = run_depth(
            ansible, database_url=migrated_db.url, statuses=["ENQUEUED", "PENDING"],
            wait_until={"queue_length_at_most": 0}, interval=0.5, wait_timeout=120)

    waiting = threading.Thread(target=wait_for_drain)
    waiting.start()
    try:
        wait_for(lambda: module_has_counted(migrated_db), 60, "the module's first count")
        start_app(migrated_db, env={"WORKER_CONCURRENCY": "2"}).wait_ready()
    finally:
        waiting.join(180)
    assert outcome["result"].ok, outcome["result"].explain()
    assert outcome["depth"]["queue_length"] == 0 and outcome["depth"]["polls"] > 1
    assert migrated_db.count("SUCCESS") == 6


def module_has_counted(db) -> bool:
    """True once another session on ``db`` has run a count over ``workflow_status`` and gone idle."""
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND state = 'idle' AND query ILIKE %s",
                           ("%count(%workflow_status%",)).fetchone()
    return row[0] > 0


def test_wait_until_times_out_with_the_last_reading(ansible, postgres_db, start_app):
    app = start_app(postgres_db, env={"WORKER_CONCURRENCY": "1"})
    app.wait_ready()
    for _ in range(3):
        app.enqueue(3600)
    result, depth = run_depth(ansible, source="url", url=f"{app.base}/metrics/taskQueue",
                              wait_until={"queue_length_at_most": 0}, interval=0.5, wait_timeout=2)
    assert not result.ok
    assert "still has" in depth["msg"] and "after" in depth["msg"]
    assert depth["queue_length"] >= 2 and depth["elapsed_ms"] >= 1500


@pytest.fixture
def https_metrics(tmp_path):
    """An HTTPS metrics endpoint with a self-signed certificate for 127.0.0.1; (url, certificate path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "metrics.crt", tmp_path / "metrics.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"queue_length": 3}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/metrics/taskQueue", cert_path
    server.shutdown()
    server.server_close()


def test_url_source_over_https_verifies_the_certificate(ansible, https_metrics):
    url, cert = https_metrics
    result, depth = run_depth(ansible, source="url", url=url, timeout=5)
    assert not result.ok
    assert "could not GET" in depth["msg"] and "CERTIFICATE_VERIFY_FAILED" in depth["msg"], depth["msg"]

    result, depth = run_depth(ansible, source="url", url=url, ca_path=str(cert), target_per_replica=2)
    assert result.ok, result.explain()
    assert (depth["queue_length"], depth["desired_replicas"]) == (3, 2)

    # unverified, and polled several times through the one TLS context of the run
    result, depth = run_depth(ansible, source="url", url=url, validate_certs=False,
                              wait_until={"queue_length_at_most": 2}, wait_timeout=2, interval=0.2)
    assert not result.ok
    assert depth["queue_length"] == 3 and depth["polls"] >= 3, depth


def test_failures_are_one_clear_line(ansible, lab, postgres_db, start_app):
    app = start_app(postgres_db)
    app.wait_ready()
    pg = lab.postgres
    cases = {
        "unreachable URL": ({"source": "url", "url": "http://127.0.0.1:9/metrics/taskQueue", "timeout": 2},
                            "could not GET"),
        "not JSON": ({"source": "url", "url": f"{lab.aws['endpoint']}/moto-api/"}, "did not answer JSON"),
        "missing field": ({"source": "url", "url": f"{app.base}/metrics/taskQueue", "value_location": "depth"},
                          "has no field 'depth'"),
        "bad database URL": ({"database_url": "not-a-url"}, "is not a PostgreSQL URL"),
        "wrong password": ({"database_url": f"postgresql://postgres:wrong-password@{pg['host']}:{pg['port']}/postgres"},
                           "could not connect"),
        "not migrated": ({"database_url": pg["admin_url"]}, "DBOS is not migrated there"),
    }
    for label, (args, message) in cases.items():
        result, depth = run_depth(ansible, **args)
        assert not result.ok, label
        assert message in depth["msg"], (label, depth["msg"])
        assert "\n" not in depth["msg"] and "Traceback" not in result.stdout + result.stderr, label
        assert "wrong-password" not in result.stdout, label


def test_database_url_stays_out_of_verbose_output(ansible, migrated_db):
    result = ansible.run(depth_play(database_url=migrated_db.url), verbosity=3, json_output=False)
    assert result.ok, result.stdout[-2000:]
    password = migrated_db.url.split(":", 2)[2].split("@", 1)[0]
    assert password not in result.stdout + result.stderr
