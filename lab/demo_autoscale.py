"""The guide's autoscaling test on the lab (``make demo-autoscale``), with the real KEDA and HPA.

1. starts the lab (or uses the one running in ``--dir``);
2. runs ``playbooks/site.yml`` with the lab's timings (``lab/autoscale.yml``: KEDA's polling interval,
   the HPA's scale-down window, the app's grace, the reconciler's interval; the HPA controller's own
   period is the lab cluster's);
3. runs ``playbooks/load_test.yml`` through ``kubectl port-forward svc/dbos-app``: ``--workflows``
   workflows of ``--seconds`` s each, on ``dbos_worker_concurrency`` (2) per pod;
4. prints the timeline (seconds since the start: queue depth, desired and ready replicas), a chart
   of it, and what became of every workflow (from the lab's PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import psycopg

from lab.core import REPO, Lab
from lab.demo import heading, playbook, port_forward, say

TIMINGS = REPO / "lab" / "autoscale.yml"


def outcome(lab: Lab, ids: list[str]) -> dict[str, int]:
    admin = lab.postgres["admin_url"].rsplit("/", 1)[0] + "/dbos_app"
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) "
                            "GROUP BY status", (ids,)).fetchall()
    return dict(rows)


def settle(lab: Lab, timeout: float = 180) -> None:
    """Wait until the app runs its minimum, 1 replica (site.yml starts it with app_replicas, and the HPA
    scales it in after its window), so that the timeline starts from rest."""
    from kubernetes import client, config

    apps = client.AppsV1Api(config.new_client_from_config(lab.kube["kubeconfig"]))
    say("  (waiting for the app to settle at its minimum, 1 replica)")
    deadline = time.monotonic() + timeout
    while True:
        deployment = apps.read_namespaced_deployment("dbos-app", "dbos")
        if deployment.spec.replicas == 1 == (deployment.status.ready_replicas or 0):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"dbos-app did not settle at 1 replica in {timeout:g} s")
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO / ".lab"), help="the lab's folder")
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--interval", type=float, default=1)
    args = parser.parse_args()

    heading("The lab: AWS (moto), Kubernetes (a real control plane, the real KEDA), PostgreSQL 16")
    lab = Lab.up(args.dir)
    heading(f"playbooks/site.yml with the lab's timings ({TIMINGS.relative_to(REPO)})")
    say("  " + "  ".join(line for line in TIMINGS.read_text().splitlines() if line and not line.startswith(("#", "-"))))
    playbook(lab, "site.yml", "-e", f"@{TIMINGS}")

    settle(lab)
    heading(f"playbooks/load_test.yml: {args.workflows} workflows of {args.seconds:g} s")
    forward, port = port_forward(lab)
    report_file = Path(tempfile.mkdtemp(prefix="dbos-load-test-")) / "report.json"
    try:
        playbook(lab, "load_test.yml", "-e", f"@{TIMINGS}", "-e", f"load_test_url=http://127.0.0.1:{port}",
                 "-e", f"load_test_workflows={args.workflows}", "-e", f"load_test_seconds={args.seconds:g}",
                 "-e", f"load_test_interval={args.interval:g}", "-e", "load_test_timeout=600",
                 "-e", f"load_test_report_file={report_file}")
    finally:
        forward.terminate()
    report = json.loads(report_file.read_text())

    heading("The timeline (seconds since the work was enqueued)")
    for line in report["table"]:
        say("  " + line)
    heading("The chart")
    for line in report["chart"]:
        say("  " + line)
    heading("What it shows")
    say(f"  {args.workflows} workflows of {args.seconds:g} s, 2 at a time per pod: the HPA asked for at most "
        f"{report['peak_desired']} replicas (at {report['peak_desired_at']} s), {report['peak_ready']} were ready "
        f"(at {report['peak_ready_at']} s); the queue was empty at {report['drained_at']} s and the replicas back "
        f"to the minimum at {report['settled_at']} s.")
    say(f"  The workflows: {outcome(lab, report['workflow_ids'])}")
    say("  make demo-teardown      # or make lab-down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
