"""One lab: start, describe, check and stop its parts.

A lab lives in a folder. ``up`` starts moto, PostgreSQL, a real Kubernetes control plane
(:mod:`lab.kube.cluster`) and the runner that runs the add-ons' controllers (:mod:`lab.kube.runner`)
on free ports and writes ``state.json`` there (mode 0600: it holds the database password). Every
other command, the lab inventory and the test fixtures read that file. ``down`` stops exactly the
processes recorded in it and removes what they left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lab import aws, postgres, procs
from lab.kube import clear_discovery_cache

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / ".lab"
TOOLS_DIR = Path(os.environ.get("LAB_TOOLS_DIR", REPO / ".tools" / "bin"))
STATE_FILE = "state.json"
STOP_SIGNALS = {"postgres": signal.SIGINT}  # PostgreSQL's fast shutdown; SIGTERM waits for clients


class LabError(RuntimeError):
    pass


@dataclass
class Lab:
    dir: Path
    state: dict = field(default_factory=dict)

    # --- reading ---------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.dir / STATE_FILE

    @classmethod
    def load(cls, directory: Path | str = DEFAULT_DIR) -> Lab:
        directory = Path(directory)
        path = directory / STATE_FILE if directory.is_dir() or not directory.suffix else directory
        if not path.exists():
            raise LabError(f"no lab at {path.parent} (start one with: make lab-up)")
        return cls(dir=path.parent, state=json.loads(path.read_text()))

    @property
    def processes(self) -> list[procs.Proc]:
        return [procs.Proc(**p) for p in self.state.get("processes", [])]

    @property
    def aws(self) -> dict:
        return self.state["aws"]

    @property
    def kube(self) -> dict:
        return self.state["kube"]

    @property
    def postgres(self) -> dict:
        return self.state["postgres"]

    def env(self) -> dict[str, str]:
        """Environment for the aws/kubectl/helm/psql-style clients and for the lab inventory."""
        env = {
            "DBOS_LAB_STATE": str(self.state_file),
            "AWS_ENDPOINT_URL": self.aws["endpoint"], "AWS_ACCESS_KEY_ID": self.aws["access_key"],
            "AWS_SECRET_ACCESS_KEY": self.aws["secret_key"], "AWS_DEFAULT_REGION": self.aws["region"],
            "AWS_REGION": self.aws["region"], "KUBECONFIG": self.kube["kubeconfig"],
            # kubectl's discovery cache is per host:port; a later lab may reuse the port
            "KUBECACHEDIR": str(self.dir / "kube-cache"),
        }
        tools = self.state.get("tools", {}).get("dir")
        if tools:
            env["PATH"] = f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"
        return env

    # --- starting --------------------------------------------------------------------------------
    @classmethod
    def up(cls, directory: Path | str = DEFAULT_DIR) -> Lab:
        """Start a lab in ``directory`` (or return the one running there)."""
        directory = Path(directory).resolve()
        if (directory / STATE_FILE).exists():
            existing = cls.load(directory)
            if all(p.alive() for p in existing.processes):
                return existing
            existing.down()  # a half-dead lab: stop what is left, start afresh
        directory.mkdir(parents=True, exist_ok=True)
        logs = directory / "logs"
        logs.mkdir(exist_ok=True)
        lab = cls(dir=directory)
        started: list[procs.Proc] = []
        t0 = time.monotonic()
        try:
            aws_port, pg_port = procs.free_port(), procs.free_port()
            # moto starts in the background while PostgreSQL initialises
            moto = procs.spawn("moto", procs.python_module("lab.aws", str(aws_port)), logs / "moto.log",
                               env={"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "PYTHONPATH": str(REPO)})
            started.append(moto)
            pg, pg_facts = postgres.start(directory, pg_port, logs / "postgres.log")
            started.append(pg)
            lab.state["postgres"] = pg_facts  # recorded at once so a failure below still cleans it up
            front, pg_facts["front"] = _pg_front(directory, logs, pg_port)
            started.append(front)
            endpoint = f"http://127.0.0.1:{aws_port}"
            kube_facts, charts = _kube(directory, logs, started, aws_endpoint=endpoint,
                                       db_address=pg_facts["front"]["host"], pg_bin_dir=Path(pg_facts["bin_dir"]))
            procs.wait_until(lambda: _http_ok(f"{endpoint}/moto-api/"), 60, "moto", moto)
        except BaseException:
            lab.state["processes"] = [p.to_dict() for p in started]
            lab.down()
            raise
        lab.state.update({
            "dir": str(directory),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "startup_seconds": round(time.monotonic() - t0, 2),
            "aws": {"endpoint": endpoint, "region": aws.DEFAULT_REGION, "access_key": aws.ACCESS_KEY,
                    "secret_key": aws.SECRET_KEY},
            "kube": kube_facts,
            "tools": {"dir": str(TOOLS_DIR) if TOOLS_DIR.is_dir() else None,
                      "helm": tool("helm"), "kubectl": tool("kubectl")},
            # what an inventory keeps in its vault besides the passwords
            "vault": {"secrets_hmac_key": secrets.token_urlsafe(32)},
            # the Helm charts the lab inventory installs instead of the ones from the charts' repositories
            # (none is reachable): the same charts, from the controllers' Go modules
            "charts": charts,
            "processes": [p.to_dict() for p in started],
        })
        lab.save()
        return lab

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    # --- checking --------------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """Each stand-in and whether it answers: ``ok`` or what is wrong."""
        alive = {p.name: p.alive() for p in self.processes}
        report = {}
        checks = {
            "moto": lambda: _http_ok(f"{self.aws['endpoint']}/moto-api/"),
            "postgres": lambda: procs.port_open(self.postgres["port"]),
            "pg-front": lambda: procs.port_open(self.postgres["front"]["port"], self.postgres["front"]["host"]),
        }
        from lab.kube import cluster

        checks["kube:kube-apiserver"] = lambda: cluster.ready(self.kube["kubeconfig"], self.kube["server"])
        checks.update({p.name: (lambda: True) for p in self.processes if p.name.startswith("kube")
                       and p.name != "kube:kube-apiserver"})
        for name, check in checks.items():
            if not alive.get(name):
                report[name] = "not running"
            else:
                report[name] = "ok" if check() else "running but not answering"
        return report

    def reset_aws(self) -> None:
        """Forget every AWS resource (moto's own reset endpoint)."""
        req = urllib.request.Request(f"{self.aws['endpoint']}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=10).read()

    # --- stopping --------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop the processes this lab started (newest first) and remove its state; logs stay."""
        stopped = []
        for proc in reversed(self.processes):
            if proc.alive():
                procs.stop(proc, sig=STOP_SIGNALS.get(proc.name, signal.SIGTERM))
                stopped.append(proc.name)
        if "postgres" in self.state:
            postgres.cleanup(self.state["postgres"], self.dir)
        if "kube" in self.state:
            clear_discovery_cache(self.kube["server"])
            if self.kube.get("workdir"):
                shutil.rmtree(self.kube["workdir"], ignore_errors=True)
            if self.kube.get("runner_state"):
                Path(self.kube["runner_state"]).unlink(missing_ok=True)
        (self.dir / STATE_FILE).unlink(missing_ok=True)
        for folder in ("postgres", "charts", "published", "pg-front", "images"):  # private keys; copies
            shutil.rmtree(self.dir / folder, ignore_errors=True)
        return stopped


def _kube(directory: Path, logs: Path, started: list[procs.Proc], *, aws_endpoint: str,
          db_address: str, pg_bin_dir: Path) -> tuple[dict, dict]:
    """The real control plane, and the runner that runs the add-ons' controllers on this machine."""
    from lab import build
    from lab.components import COMPONENTS
    from lab.kube import cluster, images, keda_chart

    facts, plane = cluster.start(directory, tool("kubectl"))
    started.extend(plane)
    clear_discovery_cache(facts["server"])
    # the add-ons' CRDs, from their modules, before anything: so a role can be tested on its own
    # (the charts carry the same CRDs, which helm then leaves as they are)
    for folder in cluster.addon_crd_folders():
        cluster.apply_crds(facts["kubeconfig"], folder)
    runner_state = directory / "runner.json"
    image_dir = directory / "images"  # the lab's images, laid out as their Dockerfiles lay them out
    images.lay_out(image_dir, pg_bin_dir)
    started.append(procs.spawn(
        "kube-runner", procs.python_module("lab.kube.runner", "--kubeconfig", facts["kubeconfig"],
                                           "--state", str(runner_state), "--logs", str(logs),
                                           "--publish", str(directory / "published"),
                                           "--aws-endpoint", aws_endpoint, "--db-address", db_address,
                                           "--images", str(image_dir)),
        logs / "kube-runner.log", env={"PYTHONPATH": str(REPO)}))
    sealed = COMPONENTS["sealed-secrets"]
    keda_facts = keda_chart.assemble(directory / "charts" / "keda")
    charts = {
        # the real chart, from the controller's own module at the version the lab runs
        "sealed-secrets": str(build.module_dir(sealed.module, sealed.version) / "helm" / "sealed-secrets"),
        # KEDA's module has no chart: one assembled from the manifests in it (lab.kube.keda_chart)
        "keda": keda_facts["chart"],
    }
    # written by the runner once the controller answers, before its pod is Ready
    # (of the controller in kube-system, where the addons role installs it, as the guide does)
    certificate = directory / "published" / "kube-system" / "sealed-secrets-cert.pem"
    return {**facts, "runner_state": str(runner_state), "sealed_secrets_cert": str(certificate),
            "keda": keda_facts}, charts


def _pg_front(directory: Path, logs: Path, pg_port: int) -> tuple[procs.Proc, dict]:
    """The lab's PostgreSQL as RDS serves it: TLS on port 5432 of an address of its own (lab.pg_front)."""
    from lab import pg_front

    folder = directory / "pg-front"
    folder.mkdir(exist_ok=True)
    address = pg_front.free_address()
    cert, key = folder / "server.crt", folder / "server.key"
    pg_front.certificate(cert, key, address)
    proc = procs.spawn("pg-front", procs.python_module(
        "lab.pg_front", "--listen", f"{address}:5432", "--upstream", f"127.0.0.1:{pg_port}", "--cert", str(cert),
        "--key", str(key)), logs / "pg-front.log", env={"PYTHONPATH": str(REPO)})
    procs.wait_until(lambda: procs.port_open(5432, address), 30, "the PostgreSQL front", proc)
    return proc, {"host": address, "port": 5432, "ssl_mode": "require"}


def tool(name: str) -> str | None:
    """helm or kubectl: the one ``make tools`` unpacked into .tools/bin, else the one on PATH."""
    path = TOOLS_DIR / name
    return str(path) if path.exists() else shutil.which(name)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False
