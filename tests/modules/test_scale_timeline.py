"""dbos.deploy.scale_timeline on the lab's API server (a Deployment whose pods kwok makes Ready, and
the real Deployment controller counting them) and the lab's PostgreSQL (DBOS's tables, migrated)."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest
from kubernetes import client

from tests.sample_app.harness import dbos_migrate, wait_for


@pytest.fixture
def migrated_db(postgres_db):
    assert dbos_migrate(postgres_db.admin_url).returncode == 0
    return postgres_db


@pytest.fixture
def namespace(kube):
    name = f"timeline-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    labels = {"app.kubernetes.io/name": "dbos-app"}
    container = {"name": "app", "image": "lab.invalid/not-run:1"}  # (kwok's: Ready, nothing runs)
    client.AppsV1Api(kube).create_namespaced_deployment(name, {
        "metadata": {"name": "dbos-app", "labels": labels},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels}, "spec": {"containers": [container]}}}})
    yield name
    client.CoreV1Api(kube).delete_namespace(name)


def watch(lab, namespace, db, **args) -> list[dict]:
    return [{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Watch", "ignore_errors": True,
        "dbos.deploy.scale_timeline": {"kubeconfig": lab.kube["kubeconfig"], "namespace": namespace,
                                       "source": "database", "database_url": db.url, **args}}]}]


def ready(kube, namespace, count):
    deployment = client.AppsV1Api(kube).read_namespaced_deployment("dbos-app", namespace)
    return deployment.status.ready_replicas == count


def test_it_follows_the_replicas_until_they_settle(ansible, lab, kube, namespace, migrated_db):
    wait_for(lambda: ready(kube, namespace, 2), 60, "two Ready replicas")

    def scale_in():  # once the module samples (its connection reads the queue), and it saw 2 replicas
        database = migrated_db.admin_url.rsplit("/", 1)[1]

        def sampling():
            with psycopg.connect(migrated_db.admin_url, autocommit=True) as conn:
                return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                    "pg_backend_pid()", (database,)).fetchone()[0] > 0
        wait_for(sampling, 60, "the module to read the queue")
        time.sleep(1.5)
        client.AppsV1Api(kube).patch_namespaced_deployment_scale("dbos-app", namespace, {"spec": {"replicas": 1}})

    threading.Thread(target=scale_in, daemon=True).start()
    result = ansible.run(watch(lab, namespace, migrated_db, settled_replicas=1, interval=0.5, timeout=60))
    watched = result.task("Watch")
    assert not watched.get("failed"), watched
    assert (watched["settled"], watched["changed"], watched["peak_desired"], watched["peak_queue_length"]) == (
        True, False, 2, 0)
    first, last = watched["timeline"][0], watched["timeline"][-1]
    assert (first["desired"], first["ready"], first["deployments"]) == (2, 2, {"dbos-app": {"desired": 2, "ready": 2}})
    assert (last["queue_length"], last["desired"], last["ready"]) == (0, 1, 1)
    assert watched["settled_at"] == last["t"] > 0  # not at the first sample: 2 desired there
    assert watched["table"][0].split() == ["t", "(s)", "queue", "desired", "ready"]
    assert any("D" in line or "*" in line for line in watched["chart"])


def test_one_that_does_not_settle_fails_with_its_timeline_and_bad_input_fails_naming_it(ansible, lab, kube, namespace,
                                                                                       migrated_db):
    result = ansible.run(watch(lab, namespace, migrated_db, settled_replicas=0, interval=0.5, timeout=2))
    stuck = result.task("Watch")
    assert stuck["failed"] and stuck["msg"].startswith("not settled within 2 s: last queue length 0, 2 desired"), stuck
    assert len(stuck["timeline"]) >= 3 and stuck["settled"] is False and stuck["chart"]
    for bad, message in (({"interval": 0}, "interval must be a positive number of seconds"),
                         ({"settled_replicas": -1}, "settled_replicas must be 0 or more"),
                         ({"source": "url"}, "source is url but all of the following are missing: url")):
        failed = ansible.run(watch(lab, namespace, migrated_db, **bad)).task("Watch")
        assert failed["failed"] and message in failed["msg"], failed
