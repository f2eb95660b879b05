"""The main job on the lab (``make demo``): the whole site, then the application and the module answering.

1. starts the lab (or uses the one running in ``--dir``);
2. runs ``ansible-playbook -i inventories/lab playbooks/site.yml``;
3. lists what it created, in AWS (moto) and in Kubernetes (the lab's real API server);
4. runs the sample app here, against the lab's PostgreSQL, with the environment the ``dbos-app``
   Deployment gives its pods (read back from the cluster, Secrets included; the database host is
   rewritten to the lab's server, as a tunnel to RDS would be), enqueues work, and shows its
   ``/healthz`` and ``/metrics`` answers;
5. runs ``playbooks/scale_report.yml``: dbos.deploy.queue_depth's queue length and desired replicas;
6. says how to tear it all down.

kwok marks the app's pods Running without running them: the app runs here, as a process, instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from lab.ansible_run import working_tree_collections
from lab.core import REPO, Lab
from lab.procs import free_port

BIN = Path(sys.executable).parent
NAMESPACE = "dbos"
WORK_SECONDS = 20
ENQUEUED = 9


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"=== {text} " + "=" * max(3, 96 - len(text)))


def ansible_env(lab: Lab) -> dict[str, str]:
    return {**os.environ, **lab.env(), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(working_tree_collections())}


def playbook(lab: Lab, name: str, *extra: str) -> None:
    argv = [str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories" / "lab"),
            str(REPO / "playbooks" / name), *extra]
    say("$ " + " ".join(["ansible-playbook", "-i", "inventories/lab", f"playbooks/{name}", *extra]))
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=ansible_env(lab), check=False)
    if done.returncode != 0:
        raise SystemExit(f"playbooks/{name} failed (exit {done.returncode})")
    say(f"(playbooks/{name}: {time.monotonic() - started:.0f} s)")


def aws_resources(lab: Lab) -> None:
    import boto3

    def client(service):
        return boto3.client(service, endpoint_url=lab.aws["endpoint"], region_name=lab.aws["region"],
                            aws_access_key_id=lab.aws["access_key"], aws_secret_access_key=lab.aws["secret_key"])

    eks, ec2, rds, ecr = client("eks"), client("ec2"), client("rds"), client("ecr")
    for name in eks.list_clusters()["clusters"]:
        cluster = eks.describe_cluster(name=name)["cluster"]
        groups = eks.list_nodegroups(clusterName=name)["nodegroups"]
        say(f"  EKS cluster     {name}: {cluster['status']}, Kubernetes {cluster['version']}, "
            f"{len(cluster['resourcesVpcConfig']['subnetIds'])} subnets, node groups {', '.join(groups)}")
    vpcs = [v for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")]
    for vpc in vpcs:
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
        nats = [n for n in ec2.describe_nat_gateways()["NatGateways"] if n.get("VpcId") == vpc["VpcId"]
                and n["State"] != "deleted"]
        say(f"  VPC             {vpc['VpcId']} {vpc['CidrBlock']}: {len(subnets)} subnets, {len(nats)} NAT gateways")
    for db in rds.describe_db_instances()["DBInstances"]:
        say(f"  RDS instance    {db['DBInstanceIdentifier']}: {db['DBInstanceStatus']}, {db['Engine']} "
            f"{db['EngineVersion']}, {db['DBInstanceClass']}, public={db['PubliclyAccessible']}, "
            f"encrypted={db['StorageEncrypted']}")
    for repo in ecr.describe_repositories()["repositories"]:
        say(f"  ECR repository  {repo['repositoryUri']}")


def kube_resources(api) -> None:
    from kubernetes import client

    apps, core, custom = client.AppsV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)
    for dep in apps.list_deployment_for_all_namespaces().items:
        if dep.metadata.namespace in ("kube-system", "keda", NAMESPACE):
            say(f"  Deployment      {dep.metadata.namespace}/{dep.metadata.name}: "
                f"{dep.status.available_replicas or 0}/{dep.spec.replicas} available")
    for svc in core.list_namespaced_service(NAMESPACE).items:
        say(f"  Service         {NAMESPACE}/{svc.metadata.name}: port {svc.spec.ports[0].port}")
    for sealed in custom.list_namespaced_custom_object("bitnami.com", "v1alpha1", NAMESPACE, "sealedsecrets")["items"]:
        synced = [c["status"] for c in sealed.get("status", {}).get("conditions", []) if c["type"] == "Synced"]
        say(f"  SealedSecret    {NAMESPACE}/{sealed['metadata']['name']}: Synced={''.join(synced) or '?'}")
    for record in core.list_namespaced_config_map(NAMESPACE, field_selector="metadata.name=dbos-migrations").items:
        say(f"  ConfigMap       {NAMESPACE}/dbos-migrations: migrated with DBOS {', '.join(sorted(record.data))}")
    for scaled in custom.list_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects")["items"]:
        spec = scaled["spec"]
        trigger = spec["triggers"][0]
        say(f"  ScaledObject    {NAMESPACE}/{scaled['metadata']['name']}: {spec['scaleTargetRef']['name']} "
            f"{spec['minReplicaCount']}-{spec['maxReplicaCount']} replicas, {trigger['type']} "
            f"{trigger['metadata'].get('url', '')} target {trigger['metadata'].get('targetValue')}")


def pod_environment(api, lab: Lab) -> tuple[dict[str, str], list[str]]:
    """The dbos-app container's environment, as the kubelet would build it, and notes on what differs."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    dep = client.AppsV1Api(api).read_namespaced_deployment("dbos-app", NAMESPACE)
    env, notes = {}, []
    for var in dep.spec.template.spec.containers[0].env:
        if var.value is not None:
            env[var.name] = var.value
        elif var.value_from.secret_key_ref:
            ref = var.value_from.secret_key_ref
            try:
                data = core.read_namespaced_secret(ref.name, NAMESPACE).data or {}
            except client.ApiException:
                notes.append(f"{var.name}: Secret {ref.name} absent, left unset")
                continue
            env[var.name] = base64.b64decode(data[ref.key]).decode()
        elif var.value_from.field_ref:
            env[var.name] = "dbos-app-demo"  # metadata.name: the pod's name
            notes.append(f"{var.name}: the pod name, here dbos-app-demo")
    url = urllib.parse.urlsplit(env["DBOS_SYSTEM_DATABASE_URL"])
    pg = lab.postgres
    local = url._replace(netloc=f"{url.username}:{url.password}@{pg['host']}:{pg['port']}",
                         query="sslmode=disable")
    env["DBOS_SYSTEM_DATABASE_URL"] = urllib.parse.urlunsplit(local)
    notes.append(f"DBOS_SYSTEM_DATABASE_URL: from Secret dbos-app-db, host {url.hostname} -> the lab's "
                 f"PostgreSQL {pg['host']}:{pg['port']} without TLS (as a tunnel to RDS would be)")
    env["PORT"] = str(free_port())
    notes.append(f"PORT: {env['PORT']} instead of the pod's 8080 (a free port here)")
    return env, notes


def get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def run_app(lab: Lab, api, workdir: Path) -> None:
    env, notes = pod_environment(api, lab)
    secret_names = ("DBOS_SYSTEM_DATABASE_URL", "DBOS_CONDUCTOR_KEY")
    for name in sorted(env):
        shown = "(from its Secret, not shown)" if name in secret_names else env[name]
        say(f"  {name}={shown}")
    for note in notes:
        say(f"  note: {note}")
    log = workdir / "demo-app.log"
    base = f"http://127.0.0.1:{env['PORT']}"
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "-m", "dbos_sample_app"], cwd=workdir,
                               env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while get(base, "/healthz")[0] != 200:
            if app.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the app did not become healthy; its log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        say(f"$ curl {base}/healthz")
        say("  " + " ".join(map(str, get(base, "/healthz"))))
        say(f"$ for i in $(seq {ENQUEUED}); do curl {base}/enqueue/{WORK_SECONDS}; done")
        for _ in range(ENQUEUED):
            code, body = get(base, f"/enqueue/{WORK_SECONDS}")
            say(f"  {code} {body}")
        concurrency = int(env["WORKER_CONCURRENCY"])
        waiting = ENQUEUED - concurrency
        deadline = time.monotonic() + 30
        while json.loads(get(base, "/metrics/taskQueue")[1]).get("queue_length") != waiting:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        say(f"$ curl {base}/metrics/taskQueue      # {concurrency} running (WORKER_CONCURRENCY), the rest waiting")
        say("  " + " ".join(map(str, get(base, "/metrics/taskQueue"))))

        heading("dbos.deploy.queue_depth: the queue as KEDA's metrics-api trigger reads it")
        playbook(lab, "scale_report.yml", "-e", f"scale_report_url={base}/metrics")
        heading("dbos.deploy.queue_depth: the same, straight from the database")
        playbook(lab, "scale_report.yml", "-e", "scale_report_source=database")
    finally:
        app.send_signal(signal.SIGTERM)  # finishes what runs within SHUTDOWN_GRACE_SECONDS; the rest stays queued
        try:
            app.wait(timeout=int(env.get("SHUTDOWN_GRACE_SECONDS", "25")) + 10)
        except subprocess.TimeoutExpired:
            app.kill()
    say(f"(the app stopped with exit code {app.returncode}; its log: {log})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO / ".lab"), help="the lab's folder")
    args = parser.parse_args()

    heading("The lab: AWS (moto), Kubernetes (a real control plane; kwok's nodes run no app pods), PostgreSQL 16")
    lab = Lab.up(args.dir)
    say(f"  lab in {lab.dir}: AWS {lab.aws['endpoint']}, Kubernetes {lab.kube['server']}, "
        f"PostgreSQL {lab.postgres['host']}:{lab.postgres['port']}")

    heading("playbooks/site.yml: eks -> rds -> addons -> secrets -> migrate -> app -> keda")
    playbook(lab, "site.yml")

    from kubernetes import config

    api = config.new_client_from_config(lab.kube["kubeconfig"])
    heading("What it created in AWS")
    aws_resources(lab)
    heading("What it created in Kubernetes")
    kube_resources(api)

    heading("The sample app, with the environment the dbos-app Deployment gives its pods")
    run_app(lab, api, lab.dir)

    heading("Tear down")
    say("  make demo-teardown      # playbooks/teardown.yml against the lab, then the lab stops; by hand:")
    say("  .venv/bin/ansible-playbook -i inventories/lab playbooks/teardown.yml \\")
    say("      -e dbos_teardown_confirm=dbos-app-cluster")
    say("  make lab-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
