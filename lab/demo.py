"""The main job on the lab (``make demo``): the whole site, then the application and the module answering.

1. starts the lab (or uses the one running in ``--dir``);
2. runs ``ansible-playbook -i inventories/lab playbooks/site.yml``;
3. lists what it created, in AWS (moto) and in Kubernetes (the lab's real API server);
4. shows the app's pods (``kubectl get pods``: their containers run, as processes, from the lab's
   images) and the migration Job's log;
5. from a client pod in the cluster, asks the app through its Service name
   (``http://dbos-app.dbos.svc.cluster.local:8080``): ``/healthz``, work enqueued, ``/metrics``;
6. runs ``playbooks/scale_report.yml``: dbos.deploy.queue_depth's queue length and desired replicas,
   through ``kubectl port-forward svc/dbos-app`` as the playbook's header says, and from the database;
7. says how to tear it all down.
"""

from __future__ import annotations

import argparse
import os
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


def kubectl(lab: Lab, *args: str, show: bool = True, check: bool = True) -> str:
    """Run the lab's kubectl (``$ kubectl ...`` printed first); its output."""
    if show:
        say("$ kubectl " + " ".join(args))
    done = subprocess.run([lab.state["tools"]["kubectl"], *args], env={**os.environ, **lab.env()},
                          capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.rstrip("\n").splitlines())


# What the client pod runs: the app's own image (it has Python), asking the app through its Service,
# as `kubectl run curl --image=curlimages/curl ...` would from inside the cluster.
CLIENT = """
import json, sys, time, urllib.request
base, count, seconds, waiting = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as answer:
        return answer.status, answer.read().decode()
print("$ curl " + base + "/healthz")
print("  %s %s" % get("/healthz"))
print("$ for i in $(seq %d); do curl %s/enqueue/%s; done" % (count, base, seconds))
for _ in range(count):
    print("  %s %s" % get("/enqueue/" + seconds))
deadline = time.monotonic() + 30
while json.loads(get("/metrics/taskQueue")[1])["queue_length"] != waiting and time.monotonic() < deadline:
    time.sleep(0.2)
print("$ curl " + base + "/metrics/taskQueue")
print("  %s %s" % get("/metrics/taskQueue"))
"""


def app_pods(lab: Lab, api) -> None:
    from kubernetes import client

    say(indent(kubectl(lab, "get", "pods", "-n", NAMESPACE, "-o", "wide")))
    jobs = client.BatchV1Api(api).list_namespaced_job(NAMESPACE, label_selector="app.kubernetes.io/name=dbos-migrate")
    for job in jobs.items:
        log = kubectl(lab, "logs", "-n", NAMESPACE, f"job/{job.metadata.name}")
        lines = log.rstrip("\n").splitlines()
        say(indent("\n".join(lines[:3] + ([f"... ({len(lines) - 6} lines)"] if len(lines) > 6 else []) + lines[-3:])))


def ask_through_the_service(lab: Lab, api) -> int:
    """Run the client pod; the number of workflows left waiting, as /metrics counts them."""
    from kubernetes import client

    dep = client.AppsV1Api(api).read_namespaced_deployment("dbos-app", NAMESPACE)
    container = dep.spec.template.spec.containers[0]
    concurrency = int(next(e.value for e in container.env if e.name == "WORKER_CONCURRENCY"))
    port = container.ports[0].container_port
    waiting = ENQUEUED - concurrency * (dep.status.ready_replicas or 0)
    base = f"http://dbos-app.{NAMESPACE}.svc.cluster.local:{port}"
    say(f"  {dep.status.ready_replicas} pods x WORKER_CONCURRENCY={concurrency} run at once; "
        f"the other {waiting} of {ENQUEUED} wait")
    kubectl(lab, "delete", "pod", "-n", NAMESPACE, "dbos-demo-client", "--ignore-not-found", "--wait=true",
            show=False)
    say(f"$ kubectl run dbos-demo-client -n {NAMESPACE} --image={container.image} --restart=Never --command -- "
        f"python -c '<ask {base}>'")
    subprocess.run([lab.state["tools"]["kubectl"], "run", "dbos-demo-client", "-n", NAMESPACE,
                    f"--image={container.image}", "--restart=Never", "--command", "--", "python", "-c", CLIENT,
                    base, str(ENQUEUED), str(WORK_SECONDS), str(waiting)],
                   env={**os.environ, **lab.env()}, capture_output=True, text=True, timeout=60, check=True)
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 90
    while core.read_namespaced_pod("dbos-demo-client", NAMESPACE).status.phase not in ("Succeeded", "Failed"):
        if time.monotonic() > deadline:
            raise SystemExit("the client pod did not finish in 90 s")
        time.sleep(0.5)
    say(indent(kubectl(lab, "logs", "-n", NAMESPACE, "dbos-demo-client", show=False)))
    kubectl(lab, "delete", "pod", "-n", NAMESPACE, "dbos-demo-client", "--wait=false", show=False)
    return waiting


def port_forward(lab: Lab) -> tuple[subprocess.Popen, int]:
    """``kubectl port-forward svc/dbos-app <free port>:8080``, as the guide checks the app."""
    port = free_port()
    say(f"$ kubectl port-forward -n {NAMESPACE} svc/dbos-app {port}:8080 &")
    forward = subprocess.Popen([lab.state["tools"]["kubectl"], "port-forward", "-n", NAMESPACE, "svc/dbos-app",
                                f"{port}:8080", "--address", "127.0.0.1"], env={**os.environ, **lab.env()},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while get(f"http://127.0.0.1:{port}", "/healthz")[0] != 200:
        if forward.poll() is not None or time.monotonic() > deadline:
            forward.kill()
            raise SystemExit(f"kubectl port-forward did not answer: {forward.stdout.read()}")
        time.sleep(0.3)
    return forward, port


def get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO / ".lab"), help="the lab's folder")
    args = parser.parse_args()

    heading("The lab: AWS (moto), Kubernetes (a real control plane; the pods of our images run), PostgreSQL 16")
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

    heading("The app's pods (their containers run from the lab's images), and the migration Job's log")
    app_pods(lab, api)

    heading("The app through its Service name, from a pod in the cluster")
    ask_through_the_service(lab, api)

    heading("dbos.deploy.queue_depth: the queue as KEDA's metrics-api trigger reads it")
    forward, port = port_forward(lab)
    try:
        playbook(lab, "scale_report.yml", "-e", f"scale_report_url=http://127.0.0.1:{port}/metrics")
    finally:
        forward.terminate()
    heading("dbos.deploy.queue_depth: the same, straight from the database")
    say("  (from this machine, as through a tunnel to RDS: here, the lab's PostgreSQL)")
    pg = lab.postgres
    playbook(lab, "scale_report.yml", "-e", "scale_report_source=database", "-e", f"scale_report_db_host={pg['host']}",
             "-e", f"scale_report_db_port={pg['port']}", "-e", "scale_report_db_ssl_mode=disable")

    heading("Tear down")
    say("  make demo-teardown      # playbooks/teardown.yml against the lab, then the lab stops; by hand:")
    say("  .venv/bin/ansible-playbook -i inventories/lab playbooks/teardown.yml \\")
    say("      -e dbos_teardown_confirm=dbos-app-cluster")
    say("  make lab-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
