"""playbooks/site.yml on the lab's real control plane, with the postgresql trigger: the real API
server (RBAC, admission; everything the roles applied is submitted again with strict field validation), the real
Sealed Secrets controller unsealing the roles' SealedSecrets, the roles' Jobs and the app's pods
running their containers (the lab's images: psql, ``dbos migrate``, the sample app) against the RDS
endpoint's name, the real KEDA operator and metrics adapter (through the aggregation layer) reading
the queue from the lab's PostgreSQL as the read-only role, real controllers rolling out the
Deployment, replacing a deleted pod and finalizing the namespace at teardown. While the site
converges (at -vvv), every TCP connection of every lab process is sampled: none may have a peer
outside 127.0.0.0/8; and every process's command line on the machine: none may hold a password (last,
once more with ansible's stock strategy, converging the torn down site)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import psycopg
import pytest
from dbos import DBOSClient
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lab.ansible_run import STRATEGIES, AnsibleRunner
from lab.core import REPO, Lab
from tests.roles.manifests import strict_refusal, strict_refusals
from tests.sample_app.harness import wait_for

SITE = REPO / "playbooks" / "site.yml"
TEARDOWN = REPO / "playbooks" / "teardown.yml"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# KEDA reading the lab's PostgreSQL as the read-only role; one ScaledObject over every version, so that
# the count below is of workflows of a version no pod runs, which leave the pods free for the tests after
# it (tests/site/test_autoscale.py scales each version on its own work, with the metrics-api trigger)
POSTGRESQL = {"keda_trigger": "postgresql", "keda_scale_per_version": False}
APP_ROLE, READER = "dbos_app_role", "dbos_queue_reader"
SCALED_OBJECT = "dbos-app-scaledobject"


class ConnectionSampler(threading.Thread):
    """Samples, every 0.2 s, the TCP connections of the lab's processes and all their children (the
    controllers the runner runs among them), and of this test's children (ansible-playbook and the
    module processes it starts)."""

    def __init__(self, lab: Lab):
        super().__init__(daemon=True)
        self.pids = [p.pid for p in lab.processes] + [os.getpid()]
        self.samples = 0
        self.seen: set[str] = set()  # processes seen with a connection: the sampler does see them
        self.foreign: set[tuple[str, str]] = set()
        self.done = threading.Event()

    def processes(self) -> list[psutil.Process]:
        found = []
        for pid in self.pids:
            try:
                top = psutil.Process(pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return found

    def run(self) -> None:
        while not self.done.is_set():
            for proc in self.processes():
                try:
                    for conn in proc.net_connections(kind="tcp"):
                        if conn.raddr:
                            self.seen.add(proc.name())
                        if conn.raddr and not _loopback(conn.raddr.ip):
                            self.foreign.add((proc.name(), f"{conn.raddr.ip}:{conn.raddr.port}"))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.samples += 1
            time.sleep(0.2)


class CommandLineSampler(threading.Thread):
    """Samples, every 0.2 s, the command line of every process on the machine (as ``ps`` shows them):
    which of ``secrets`` (by name) appeared in which program's."""

    def __init__(self, secrets: dict[str, str]):
        super().__init__(daemon=True)
        self.secrets, self.samples, self.seen = secrets, 0, set()
        self.found: set[tuple[str, str]] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for proc in psutil.process_iter(["name", "cmdline"]):
                line = " ".join(proc.info["cmdline"] or [])
                self.seen.add(proc.info["name"])
                self.found |= {(name, proc.info["name"]) for name, secret in self.secrets.items() if secret in line}
            self.samples += 1
            time.sleep(0.2)


def recap(result) -> dict[str, int]:
    """The PLAY RECAP's counts of a run with the default output (not JSON)."""
    found = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    assert found, result.stdout[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, found.groups()), strict=True))


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address in LOOPBACK or address == ipaddress.ip_address("::1")


def sampled_converge(lab: Lab, runner: AnsibleRunner, env: dict[str, str] | None = None):
    """site.yml at -vvv, the lab's connections and every process's command line sampled while it runs."""
    sampler = ConnectionSampler(lab)
    pg = lab.postgres
    commands = CommandLineSampler({"admin": pg["password"], "app role": pg["app_role_password"],
                                   "reader": pg["queue_reader_password"]})
    sampler.start()
    commands.start()
    try:
        return runner.run(SITE, extra_vars=POSTGRESQL, verbosity=3, json_output=False, env=env), sampler, commands
    finally:
        for each in (sampler, commands):
            each.done.set()
            each.join()


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("real-site")
    lab = Lab.up(workdir / "lab")
    try:
        runner = AnsibleRunner(lab, workdir)
        first, sampler, commands = sampled_converge(lab, runner)
        yield lab, runner, first, sampler, commands
    finally:
        lab.down()


def test_the_site_converges_with_no_packet_off_loopback(converged):
    _, _, first, sampler, _ = converged
    assert first.ok, first.stdout[-3000:]
    assert recap(first)["changed"] > 0
    assert sampler.samples > 20
    # processes with long-lived connections, seen in every sample run (PostgreSQL's are too brief to count on)
    assert {"kube-apiserver", "kube-controller-manager", "controller", "keda", "keda-adapter"} <= sampler.seen, \
        sampler.seen
    assert sampler.foreign == set()


@pytest.mark.parametrize(("ip", "local"), [("127.0.0.1", True), ("127.1.0.5", True), ("::1", True),
                                           ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("192.0.2.1", False),
                                           ("::ffff:10.96.0.1", False), ("fd00::1", False)])
def test_what_counts_as_loopback(ip, local):
    assert _loopback(ip) is local


def test_the_real_controller_unsealed_the_secrets(converged):
    lab, _, first, _, _ = converged
    assert first.ok, first.explain()
    core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    admin = core.read_namespaced_secret("postgres-admin", "dbos")
    assert admin.metadata.owner_references[0].kind == "SealedSecret"
    password = hashlib.sha256(base64.b64decode(admin.data["password"])).hexdigest()  # compared by hash
    assert password == hashlib.sha256(lab.postgres["password"].encode()).hexdigest()
    # the controller that did it is the real one, run for its pod by the lab's runner
    controllers = json.loads(Path(lab.kube["runner_state"]).read_text())
    controller = controllers["kube-system/sealed-secrets"]
    assert controller["ready"] and controller["pod"].startswith("kube-system/sealed-secrets-")


def job_pod_log(core, job: str) -> tuple[client.V1Pod, str]:
    [pod] = core.list_namespaced_pod("dbos", label_selector=f"job-name={job}").items
    return pod, core.read_namespaced_pod_log(pod.metadata.name, "dbos")


def test_the_jobs_ran_their_containers_against_the_rds_endpoint(converged):
    """The rds role's bootstrap Job made the database and the app role; the migrate Job's log is
    ``dbos migrate``'s own, after which the app role has DML and no DDL; the keda role's Job made
    the read-only role. Each ran its container (exit code 0, its log served by the API)."""
    lab, _, first, _, _ = converged
    assert first.ok, first.stdout[-3000:]
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    jobs = {j.metadata.name: j for j in batch.list_namespaced_job("dbos").items}
    assert {"dbos-app-pg-bootstrap", "dbos-migrate-3-4-0", "dbos-queue-reader-grants"} <= set(jobs), set(jobs)
    for name in ("dbos-app-pg-bootstrap", "dbos-migrate-3-4-0", "dbos-queue-reader-grants"):
        assert any(c.type == "Complete" and c.status == "True" for c in jobs[name].status.conditions), name
        pod, _ = job_pod_log(core, name)
        assert pod.status.container_statuses[0].state.terminated.exit_code == 0, name
    pg = lab.postgres
    with psycopg.connect(pg["admin_url"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'dbos_app'").fetchone() == (1,)
        roles = dict(conn.execute("SELECT rolname, (rolcanlogin, rolsuper, rolcreatedb, rolcreaterole) FROM pg_roles "
                                  "WHERE rolname IN (%s, %s)", (APP_ROLE, READER)).fetchall())
    assert roles == dict.fromkeys((APP_ROLE, READER), ("t", "f", "f", "f")), roles

    _, log = job_pod_log(core, "dbos-migrate-3-4-0")
    lines = log.splitlines()
    assert lines[0] == "Starting DBOS migrations", lines[:3]
    assert "dbos-app-pg." in lines[1] and ".rds.amazonaws.com:5432/dbos_app?sslmode=require" in lines[1]
    assert any("Applying DBOS system database schema migration" in line for line in lines)
    assert pg["password"] not in log
    app_url = f"postgresql://{APP_ROLE}:{pg['app_role_password']}@{pg['host']}:{pg['port']}/dbos_app"
    with psycopg.connect(app_url, autocommit=True) as conn:
        assert conn.execute("SELECT has_table_privilege('dbos.workflow_status', 'SELECT, INSERT, UPDATE, DELETE')"
                            ).fetchone() == (True,)
        for statement in ("CREATE TABLE dbos.intruder (x int)", "DROP TABLE dbos.workflow_status"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def app_pods(core) -> list[client.V1Pod]:
    return [p for p in core.list_namespaced_pod("dbos", label_selector="app.kubernetes.io/name=dbos-app").items
            if p.metadata.deletion_timestamp is None]


def ready_since(pod: client.V1Pod):
    ready = next((c for c in pod.status.conditions or [] if c.type == "Ready"), None)
    return ready.last_transition_time if ready is not None and ready.status == "True" else None


def test_the_app_pods_run_the_app_and_are_ready_only_once_dbos_has_launched(converged):
    lab, _, first, _, _ = converged
    assert first.ok, first.stdout[-3000:]
    core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    pods = app_pods(core)
    assert len(pods) >= 1
    runner = json.loads(Path(lab.kube["runner_state"]).read_text())["pods"]
    for pod in pods:
        assert ready_since(pod) is not None, pod.status
        address = ipaddress.ip_address(pod.status.pod_ip)
        assert address in LOOPBACK and str(address) != "127.0.0.1"
        assert runner[f"dbos/{pod.metadata.name}"]["addresses"] == {"http": f"{address}:8080"}
        # the pod's address answers as the app (the readiness probe's URL), named after the pod
        with urllib.request.urlopen(f"http://{address}:8080/healthz", timeout=5) as answer:
            assert json.loads(answer.read())["executor_id"] == pod.metadata.name
        log = core.read_namespaced_pod_log(pod.metadata.name, "dbos", timestamps=True)
        [started] = [line for line in log.splitlines() if '"event": "started"' in line]
        launched = datetime.datetime.fromisoformat(started.split(" ", 1)[0])
        assert ready_since(pod) >= launched.replace(microsecond=0), (ready_since(pod), launched)


def test_a_second_run_and_check_mode_change_nothing(converged):
    _, runner, first, _, _ = converged
    assert first.ok, first.explain()
    for check in (False, True):
        again = runner.run(SITE, check=check, extra_vars=POSTGRESQL)
        assert again.ok, again.explain()
        assert again.changed == 0, [n for n, r in again.tasks() if r.get("changed")]


def test_what_the_roles_applied_is_accepted_with_strict_field_validation(converged):
    """The roles apply under the API's default field validation (Warn), which drops an unknown field and
    succeeds: every object they applied is submitted again, as a server-side apply with
    ``fieldValidation=Strict``, dry run, to the real API server, against the CRDs KEDA and Sealed Secrets
    ship for the custom resources."""
    lab, _, first, _, _ = converged
    assert first.ok, first.stdout[-3000:]
    kinds = {(obj["apiVersion"], obj["kind"]) for _, obj in first.applied}
    assert {("v1", "Namespace"), ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"),
            ("bitnami.com/v1alpha1", "SealedSecret"), ("keda.sh/v1alpha1", "ScaledObject"),
            ("keda.sh/v1alpha1", "TriggerAuthentication"), ("rbac.authorization.k8s.io/v1", "Role"),
            ("coordination.k8s.io/v1", "Lease")} <= kinds, kinds
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    assert strict_refusals(api, first.applied) == {}
    # the same submission refuses a field the CRD does not have
    [scaled] = [obj for _, obj in first.applied if obj["kind"] == "ScaledObject"]
    misspelt = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}}
    assert ".spec.maxReplicas: field not declared in schema" in (strict_refusal(api, misspelt) or "")


def external_metric(lab: Lab) -> tuple[str, list[dict]]:
    """The HPA's metric name, and what the API server answers for it: the aggregation layer's route to
    KEDA's metrics adapter, as ``kubectl get --raw`` asks it and as the HPA controller does."""
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{SCALED_OBJECT}", "dbos")
    name = hpa.spec.metrics[0].external.metric.name
    selector = urllib.parse.quote(f"scaledobject.keda.sh/name={SCALED_OBJECT}")
    raw = subprocess.run([lab.state["tools"]["kubectl"], "get", "--raw",
                          f"/apis/external.metrics.k8s.io/v1beta1/namespaces/dbos/{name}?labelSelector={selector}"],
                         env={**os.environ, **lab.env()}, capture_output=True, text=True, timeout=30, check=False)
    assert raw.returncode == 0, raw.stderr
    return name, json.loads(raw.stdout)["items"]


def test_keda_accepts_the_scaled_object_and_counts_the_queue_as_the_reader(converged):
    """KEDA reports the ScaledObject Ready and made its HPA (the role checked both: keda_verify_hpa is
    true on the lab for this trigger); the metric KEDA serves through the aggregation layer is the
    bounded count of the workflows enqueued in the lab's PostgreSQL, from a connection of the
    read-only role."""
    lab, _, first, _, _ = converged
    assert first.ok, first.explain()
    assert "KEDA scales dbos-app with keda-hpa-dbos-app-scaledobject between 1 and 10 replicas" in first.stdout
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    scaled = client.CustomObjectsApi(api).get_namespaced_custom_object("keda.sh", "v1alpha1", "dbos", "scaledobjects",
                                                                       SCALED_OBJECT)
    assert {"type": "Ready", "status": "True"}.items() <= next(
        c for c in scaled["status"]["conditions"] if c["type"] == "Ready").items()
    # the HPA KEDA made removes pods only after the role's stabilization window
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{SCALED_OBJECT}", "dbos")
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 300
    name, items = external_metric(lab)
    assert name == "s0-postgresql" and [i["value"] for i in items] == ["0"]
    # KEDA connects as on AWS: to the RDS endpoint's name, with TLS (the lab resolves the name to its
    # PostgreSQL front for the processes it runs)
    secret = client.CoreV1Api(api).read_namespaced_secret("dbos-queue-reader", "dbos")
    url = urllib.parse.urlsplit(base64.b64decode(secret.data["database-url"]).decode())
    assert url.hostname.endswith(".rds.amazonaws.com") and url.port == 5432, url.hostname
    assert urllib.parse.parse_qs(url.query) == {"sslmode": ["require"]}

    admin = lab.postgres["admin_url"].rsplit("/", 1)[0] + "/dbos_app"
    dbos = DBOSClient(system_database_url=admin, application_name="dbos-app")
    try:
        for _ in range(7):  # of a version no pod runs: they stay ENQUEUED, and leave the pods free
            dbos.enqueue({"queue_name": "taskQueue", "workflow_name": "sleep_workflow", "app_version": "not-deployed"},
                         3600)
    finally:
        dbos.destroy()
    # KEDA asks the database on each request (no cache by default): 7 waiting, under the bound of 20
    wait_for(lambda: external_metric(lab)[1][0]["value"] == "7", 30, "KEDA's metric to count 7 workflows")
    with psycopg.connect(admin, autocommit=True) as conn:
        users = {row[0] for row in conn.execute(
            "SELECT usename FROM pg_stat_activity WHERE datname = 'dbos_app' AND pid <> pg_backend_pid()")}
    assert "dbos_queue_reader" in users, users


def workflows(admin: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(admin, autocommit=True) as conn:
        return {w: (status, executor) for w, status, executor in conn.execute(
            "SELECT workflow_uuid, status, executor_id FROM dbos.workflow_status WHERE queue_name = 'taskQueue'")}


def test_a_deleted_app_pod_finishes_its_running_workflows_and_its_replacement_becomes_ready(converged):
    """As a kubelet stops a pod: SIGTERM, the app drains (its running workflows finish within the
    grace period; it dequeues nothing more), and only once its process is gone is the pod object
    removed; the queued work stays ENQUEUED for the other pods, and the ReplicaSet's replacement
    becomes Ready. No workflow is stranded: all end SUCCESS."""
    lab, _, first, _, _ = converged
    assert first.ok, first.stdout[-3000:]
    api = config.new_client_from_config(lab.kube["kubeconfig"])
    core = client.CoreV1Api(api)
    pods = sorted((p for p in app_pods(core) if ready_since(p)), key=lambda p: p.metadata.name)
    assert pods
    dep = client.AppsV1Api(api).read_namespaced_deployment("dbos-app", "dbos")
    concurrency = int(next(e.value for e in dep.spec.template.spec.containers[0].env
                           if e.name == "WORKER_CONCURRENCY"))
    grace = dep.spec.template.spec.termination_grace_period_seconds
    admin = lab.postgres["admin_url"].rsplit("/", 1)[0] + "/dbos_app"
    victim = pods[0]
    base = f"http://{victim.status.pod_ip}:8080"
    ids = []
    for _ in range(concurrency * len(pods) + 3):  # every pod's slots full, and three waiting
        with urllib.request.urlopen(f"{base}/enqueue/8", timeout=10) as answer:
            ids.append(json.loads(answer.read())["workflow_id"])
    name = victim.metadata.name

    def victim_full():
        ours = {w: v for w, v in workflows(admin).items() if w in ids}
        running = {w for w, (status, executor) in ours.items() if status == "PENDING" and executor == name}
        return running if len(running) == concurrency else None

    running = wait_for(victim_full, 30, f"{name} to run {concurrency} workflows")
    t0 = time.monotonic()
    core.delete_namespaced_pod(name, "dbos")

    def gone():
        try:
            core.read_namespaced_pod(name, "dbos")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, grace + 30, f"{name} to stop and its pod object to go")
    assert time.monotonic() - t0 < grace + 5
    after = workflows(admin)
    assert {w: after[w][0] for w in running} == dict.fromkeys(running, "SUCCESS")  # finished within the grace
    # it ran nothing more: what it ran are its two (a workflow still ENQUEUED names the executor that
    # enqueued it, here the victim, until another dequeues it); the rest waited for the other pods
    ran = {w for w, (status, executor) in after.items() if w in ids and executor == name and status != "ENQUEUED"}
    assert ran == running, {w: after[w] for w in ids}
    log = (lab.dir / "logs" / f"dbos.{name}.app.log").read_text()
    assert '"event": "draining"' in log and '"event": "stopped"' in log
    runner_log = (lab.dir / "logs" / "kube-runner.log").read_text()
    assert f"dbos/{name} is deleted: SIGTERM" in runner_log and f"dbos/{name} outlived" not in runner_log

    def replaced():
        fresh = [p for p in app_pods(core) if p.metadata.name not in {q.metadata.name for q in pods}]
        return [p for p in fresh if ready_since(p)] or None

    wait_for(replaced, 60, "the ReplicaSet's replacement to become Ready")
    wait_for(lambda: all(workflows(admin)[w][0] == "SUCCESS" for w in ids), 90, "every workflow to finish")


def test_teardown_deletes_the_namespace_for_real(converged):
    lab, runner, first, _, _ = converged
    assert first.ok, first.explain()
    done = runner.run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
    assert done.ok, done.explain()
    core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    with pytest.raises(ApiException) as gone:
        core.read_namespace("dbos")
    assert gone.value.status == 404


# (ansible's linear strategy at -vvv is checked on the site by tests/site/test_site.py's retire and
# teardown, and here, with a whole converge of its own, in make test-all: it does not fit CI's 30 minutes)
@pytest.mark.parametrize("strategy", [pytest.param("linear", marks=pytest.mark.test_all), "mitogen_linear"])
def test_no_password_in_any_command_line_or_in_the_vvv_output(converged, strategy):
    """The first converge's, with the strategy ansible.cfg selects; with ansible's linear, a converge of
    its own on the torn down site (last, after the teardown's test; torn down here when run alone)."""
    lab, runner, first, _, commands = converged
    if strategy != "mitogen_linear":
        core = client.CoreV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
        if "dbos" in [n.metadata.name for n in core.list_namespace().items]:
            done = runner.run(TEARDOWN, extra_vars={"dbos_teardown_confirm": "dbos-app-cluster"})
            assert done.ok, done.explain()
        first, _, commands = sampled_converge(lab, runner, STRATEGIES[strategy])
    assert first.ok, first.stdout[-3000:]
    assert first.verbose_strategy() == strategy, first.stdout[:3000]
    assert commands.samples > 20 and {"psql", "kube-apiserver"} <= commands.seen, commands.seen
    assert commands.found == set()
    pg = lab.postgres
    for secret in (pg["password"], pg["app_role_password"], pg["queue_reader_password"]):
        assert secret not in first.stdout and secret not in first.stderr
