"""dbos.deploy.queue_depth against the lab PostgreSQL and the running sample app, with real workflows."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading

import pytest
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


def enqueue(db, count, version, app="dbos-sample-app", queue="taskQueue"):
    client = DBOSClient(system_database_url=db.url, application_name=app)
    try:
        for _ in range(count):
            client.enqueue({"queue_name": queue, "workflow_name": "sleep_workflow", "app_version": version}, 3600)
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


def test_wait_until_drained_succeeds(ansible, postgres_db, start_app):
    app = start_app(postgres_db, env={"WORKER_CONCURRENCY": "2"})
    app.wait_ready()
    for _ in range(6):
        app.enqueue(0.5)
    result, depth = run_depth(ansible, database_url=postgres_db.url, statuses=["ENQUEUED", "PENDING"],
                              wait_until={"queue_length_at_most": 0}, interval=0.5, wait_timeout=60)
    assert result.ok, result.explain()
    assert depth["queue_length"] == 0 and depth["polls"] > 1
    assert postgres_db.count("SUCCESS") == 6


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
                              wait_until={"queue_length_at_most": 2}, timeout=2, interval=0.2)
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
