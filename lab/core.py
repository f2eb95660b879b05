"""One lab: start, describe, check and stop its stand-ins.

A lab lives in a folder. ``up`` starts moto, the Kubernetes emulator, the status stand-in and
PostgreSQL on free ports and writes ``state.json`` there (mode 0600: it holds the database
password). Every other command, the lab inventory and the test fixtures read that file.
``down`` stops exactly the processes recorded in it.
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
from lab.kube import clear_discovery_cache, write_kubeconfig

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = Path(__file__).resolve().parent / "crds"
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
    def up(cls, directory: Path | str = DEFAULT_DIR, status_delay: float = 1.0, kube: str | None = None) -> Lab:
        """Start a lab in ``directory`` (or return the one running there).

        ``kube``: ``emulator`` (the default, for now) or ``real``, the real control plane of
        :mod:`lab.kube.cluster` with the controllers :mod:`lab.kube.runner` runs (being brought in);
        ``$DBOS_LAB_KUBE`` when not given."""
        kube = kube or os.environ.get("DBOS_LAB_KUBE", "emulator")
        if kube not in ("emulator", "real"):
            raise LabError(f"kube must be emulator or real, got {kube!r}")
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
            # moto (and the emulator) start in the background while PostgreSQL initialises
            moto = procs.spawn("moto", procs.python_module("lab.aws", str(aws_port)), logs / "moto.log",
                               env={"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "PYTHONPATH": str(REPO)})
            started.append(moto)
            emulator = _spawn_emulator(logs) if kube == "emulator" else None
            if emulator:
                started.append(emulator[0])
            pg, pg_facts = postgres.start(directory, pg_port, logs / "postgres.log")
            started.append(pg)
            lab.state["postgres"] = pg_facts  # recorded at once so a failure below still cleans it up
            if emulator:
                kube_facts, charts = _emulator_kube(directory, logs, emulator, status_delay, started)
            else:
                kube_facts, charts = _real_kube(directory, logs, started)
            endpoint = f"http://127.0.0.1:{aws_port}"
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
        }
        if self.kube.get("kind") == "real":
            from lab.kube import cluster

            checks["kube:kube-apiserver"] = lambda: cluster.ready(self.kube["kubeconfig"], self.kube["server"])
            checks.update({p.name: (lambda: True) for p in self.processes if p.name.startswith("kube")
                           and p.name != "kube:kube-apiserver"})
        else:
            checks["kube-emulator"] = lambda: _http_ok(f"{self.kube['server']}/version")
            checks["kube-status"] = lambda: True
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
        for name in (STATE_FILE, "kubeconfig"):
            (self.dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.dir / "postgres", ignore_errors=True)
        return stopped


def _spawn_emulator(logs: Path) -> tuple[procs.Proc, int]:
    port = procs.free_port()
    emulator = procs.spawn(
        "kube-emulator", procs.python_module("lab.kube.emulator", "--port", str(port), "--crd-dir", str(CRD_DIR)),
        logs / "kube-emulator.log", env={"PYTHONPATH": str(REPO)})
    return emulator, port


def _emulator_kube(directory: Path, logs: Path, emulator: tuple[procs.Proc, int], status_delay: float,
                   started: list[procs.Proc]) -> tuple[dict, dict]:
    """The emulator, once it answers, and the status stand-in playing its controllers."""
    proc, port = emulator
    server = f"http://127.0.0.1:{port}"
    procs.wait_until(lambda: _http_ok(f"{server}/version"), 30, "kubernetes emulator", proc)
    kubeconfig = directory / "kubeconfig"
    write_kubeconfig(kubeconfig, server)
    clear_discovery_cache(server)
    started.append(procs.spawn(
        "kube-status", procs.python_module("lab.kube.status", "--kubeconfig", str(kubeconfig),
                                           "--delay", str(status_delay)),
        logs / "kube-status.log", env={"PYTHONPATH": str(REPO)}))
    facts = {"kind": "emulator", "server": server, "kubeconfig": str(kubeconfig), "version": "v1.31.0",
             "status_delay": status_delay, "crd_dir": str(CRD_DIR)}
    # the stand-in charts: the real charts' Deployments, Service and labels
    charts = {name: str(REPO / "tests" / "lab" / "charts" / name) for name in ("sealed-secrets", "keda")}
    return facts, charts


def _real_kube(directory: Path, logs: Path, started: list[procs.Proc]) -> tuple[dict, dict]:
    """The real control plane, and the runner that runs the add-ons' controllers on this machine."""
    from lab import build
    from lab.components import COMPONENTS
    from lab.kube import cluster

    facts, plane = cluster.start(directory, tool("kubectl"))
    started.extend(plane)
    clear_discovery_cache(facts["server"])
    keda = COMPONENTS["keda"]
    cluster.apply_crds(facts["kubeconfig"], build.module_dir(keda.module, keda.version) / "config" / "crd" / "bases")
    runner_state = directory / "runner.json"
    started.append(procs.spawn(
        "kube-runner", procs.python_module("lab.kube.runner", "--kubeconfig", facts["kubeconfig"],
                                           "--state", str(runner_state), "--logs", str(logs),
                                           "--publish", str(directory / "published")),
        logs / "kube-runner.log", env={"PYTHONPATH": str(REPO)}))
    sealed = COMPONENTS["sealed-secrets"]
    charts = {
        # the real chart, from the controller's own module at the version the lab runs
        "sealed-secrets": str(build.module_dir(sealed.module, sealed.version) / "helm" / "sealed-secrets"),
        "keda": str(REPO / "tests" / "lab" / "charts" / "keda"),  # still the stand-in
    }
    # written by the runner once the controller answers, before its pod is Ready
    certificate = directory / "published" / "sealed-secrets-cert.pem"
    return {**facts, "kind": "real", "runner_state": str(runner_state), "sealed_secrets_cert": str(certificate)}, charts


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
