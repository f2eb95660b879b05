"""The reconciler's process: every ``RECONCILER_INTERVAL_SECONDS``, while it holds the Lease, it hands
the PENDING workflows of the application's dead pods back to their queue (:mod:`dbos_reconciler.decide`).

With DBOS's public client (``DBOSClient.list_workflows`` and ``resume_workflows(ids, queue_name=...)``):
resuming sets a workflow ENQUEUED on its queue again, and a worker of the workflow's own application
version dequeues it and runs it from its last completed step. Each recovery is one JSON log line
(event ``recovered``) with the dead executor and the workflow ids.

It also answers ``GET /healthz`` (200 while its loop turns, with whether it leads and what it did).

Configuration (environment): ``DBOS_SYSTEM_DATABASE_URL`` (the application's, as its restricted
role), ``RECONCILER_NAMESPACE``, ``RECONCILER_POD_NAME`` (its identity in the Lease),
``RECONCILER_LEASE_NAME``, ``RECONCILER_LEASE_SECONDS`` (15), ``RECONCILER_INTERVAL_SECONDS`` (10),
``RECONCILER_EXECUTOR_PREFIX`` (the application's pods' names start with it), ``RECONCILER_APPLICATION_NAME``
(optional: only that DBOS application's workflows), ``RECONCILER_MAX_RECOVERIES`` (10: how many times
one workflow is resumed at most), ``PORT`` (8080).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dbos_reconciler.decide import Pending, Recovery, recoveries
from dbos_reconciler.kube import Api, Lease

log = logging.getLogger("dbos_reconciler")
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class SettingsError(ValueError):
    """A configuration value that cannot work; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    namespace: str
    identity: str
    lease_name: str
    executor_prefix: str
    lease_seconds: int = 15
    interval_seconds: float = 10.0
    application_name: str | None = None
    port: int = 8080
    max_recoveries: int = 10

    def __repr__(self) -> str:  # never the database password
        return (f"Settings(namespace={self.namespace}, identity={self.identity}, lease={self.lease_name}, "
                f"executor_prefix={self.executor_prefix}, interval_seconds={self.interval_seconds:g})")

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SettingsError(f"{name} is required")
            return value

        settings = cls(
            database_url=required("DBOS_SYSTEM_DATABASE_URL"),
            namespace=env.get("RECONCILER_NAMESPACE") or _file(NAMESPACE_FILE) or required("RECONCILER_NAMESPACE"),
            identity=env.get("RECONCILER_POD_NAME") or env.get("HOSTNAME") or socket.gethostname(),
            lease_name=required("RECONCILER_LEASE_NAME"),
            executor_prefix=required("RECONCILER_EXECUTOR_PREFIX"),
            lease_seconds=int(_number(env, "RECONCILER_LEASE_SECONDS", 15, minimum=3, whole=True)),
            interval_seconds=_number(env, "RECONCILER_INTERVAL_SECONDS", 10.0, minimum=0.1),
            application_name=env.get("RECONCILER_APPLICATION_NAME") or None,
            port=int(_number(env, "PORT", 8080, minimum=1, maximum=65535, whole=True)),
            max_recoveries=int(_number(env, "RECONCILER_MAX_RECOVERIES", 10, minimum=1, whole=True)),
        )
        if settings.interval_seconds >= settings.lease_seconds - 2:
            raise SettingsError(f"RECONCILER_INTERVAL_SECONDS ({settings.interval_seconds:g}) must be less than "
                                f"RECONCILER_LEASE_SECONDS less 2 ({settings.lease_seconds - 2}): the holder renews "
                                "the Lease once a pass, and acts only while its renewal is that fresh")
        if not settings.database_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise SettingsError("DBOS_SYSTEM_DATABASE_URL must be a postgresql:// URL")
        return settings


def _file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _number(env, name, default, *, minimum=None, maximum=None, whole=False) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {'whole ' if whole else ''}number, got {raw!r}") from None
    out_of_range = (minimum is not None and value < minimum) or (maximum is not None and value > maximum)
    if not math.isfinite(value) or out_of_range:
        bounds = f"at least {minimum:g}" + (f" and at most {maximum:g}" if maximum is not None else "")
        raise SettingsError(f"{name} must be {bounds}, got {raw!r}")
    return value


class Reconciler:
    """One pass at a time: :meth:`reconcile` (leading or not), then the loop sleeps the interval."""

    def __init__(self, settings: Settings, client, api: Api, lease: Lease):
        self.settings, self.client, self.api, self.lease = settings, client, api, lease
        self.leading = False
        self.last_pass: float | None = None
        self.last_error: str | None = None
        self.recovered_total = 0
        self.attempts: dict[str, int] = {}  # workflow id -> how many times this process resumed it

    def pending(self) -> list[Pending]:
        found = self.client.list_workflows(status="PENDING", load_input=False, load_output=False,
                                           application_name=self.settings.application_name)
        return [Pending(workflow_id=w.workflow_id, executor_id=w.executor_id, queue_name=w.queue_name,
                        app_version=w.app_version) for w in found]

    def reconcile(self) -> list[Recovery]:
        leading = self.lease.try_acquire_or_renew()
        if leading != self.leading:
            event("leading" if leading else "following", lease=self.settings.lease_name,
                  identity=self.settings.identity)
            self.leading = leading
        if not leading:
            return []
        # the workflows first, then the pods: a pod that owns one of them existed before this read
        candidates = [p for p in self.pending() if (p.executor_id or "").startswith(self.settings.executor_prefix)]
        if not candidates:
            return []
        plan = recoveries(candidates, self.api.pods(self.settings.namespace), self.settings.executor_prefix)
        done = []
        for recovery in plan:
            # DBOS's resume is unconditional (any workflow not yet SUCCESS or ERROR becomes ENQUEUED): right
            # before it, the Lease must still be fresh and each workflow still PENDING on the dead executor.
            # This narrows the window in which another holder may have resumed them too; it does not close
            # it (the read and the resume are two statements).
            if not self.lease.holding():
                event("lease_stale", level=logging.WARNING, lease=self.settings.lease_name,
                      note="the pass took too long to act on: the rest waits for the next pass")
                break
            still = [w.workflow_id for w in self.client.list_workflows(
                workflow_ids=list(recovery.workflow_ids), status="PENDING", executor_id=recovery.executor_id,
                load_input=False, load_output=False)]
            ids = [w for w in still if self.admit(w, recovery.executor_id)]
            if not ids:
                continue
            try:
                self.client.resume_workflows(ids, queue_name=recovery.queue_name)
            except Exception as exc:  # a workflow deleted since the read, say: the other groups go on
                event("recovery_failed", level=logging.WARNING, executor=recovery.executor_id, workflow_ids=ids,
                      error=f"{type(exc).__name__}: {exc}")
                continue
            self.recovered_total += len(ids)
            event("recovered", executor=recovery.executor_id, queue=recovery.queue_name, workflow_ids=ids,
                  app_versions=list(recovery.app_versions), count=len(ids))
            done.append(recovery)
        return done

    def admit(self, workflow_id: str, executor_id: str) -> bool:
        """Whether to resume ``workflow_id`` once more. DBOS's resume resets its recovery attempts, so
        DBOS's own limit never stops a workflow whose run kills its pod each time (out of memory, say):
        this process stops after ``max_recoveries`` of its own, and says so once."""
        count = self.attempts.get(workflow_id, 0)
        if count >= self.settings.max_recoveries:
            if count == self.settings.max_recoveries:
                event("recovery_abandoned", level=logging.ERROR, workflow_id=workflow_id, executor=executor_id,
                      recoveries=count, note="left PENDING: see why its pods die, then resume it by hand")
                self.attempts[workflow_id] = count + 1
            return False
        self.attempts[workflow_id] = count + 1
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.reconcile()
                self.last_error = None
            except Exception as exc:  # a database or API server away for a while: the next pass retries
                self.last_error = f"{type(exc).__name__}: {exc}"
                event("pass_failed", level=logging.ERROR, error=self.last_error)
            self.last_pass = time.monotonic()
            stop.wait(self.settings.interval_seconds)

    def health(self) -> tuple[int, dict]:
        stale = 3 * self.settings.interval_seconds + self.settings.lease_seconds
        alive = self.last_pass is not None and time.monotonic() - self.last_pass < stale
        return (200 if alive else 503), {"status": "ok" if alive else "starting", "leading": self.leading,
                                         "recovered_total": self.recovered_total, "last_error": self.last_error}


def serve_health(reconciler: Reconciler, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # (http.server's name for it)
            code, body = reconciler.health() if self.path == "/healthz" else (404, {"error": "not found"})
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # no access log
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def event(name: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, name, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                "logger": record.name, "event": record.getMessage(), **getattr(record, "fields", {})}
        return json.dumps(line)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def main() -> int:
    configure_logging()
    try:
        settings = Settings.from_env(dict(os.environ))
        api = Api.in_cluster(dict(os.environ))
    except (SettingsError, RuntimeError) as exc:
        event("config_error", level=logging.ERROR, error=str(exc))
        return 2
    from dbos import DBOSClient  # (imported here: the settings are checked first, and fast)

    # lazy: a database not there yet is a failed pass, retried, not a crash; no retry inside a call,
    # so that a pass fails and the loop (and its health) goes on
    client = DBOSClient(system_database_url=settings.database_url, lazy=True, retry_connection_errors=False,
                        system_database_pool_size=2)
    lease = Lease(api, settings.namespace, settings.lease_name, settings.identity, settings.lease_seconds)
    reconciler = Reconciler(settings, client, api, lease)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = serve_health(reconciler, settings.port)
    event("started", namespace=settings.namespace, identity=settings.identity, lease=settings.lease_name,
          executor_prefix=settings.executor_prefix, interval_seconds=settings.interval_seconds,
          lease_seconds=settings.lease_seconds)
    reconciler.run(stop)
    try:
        lease.release()
    except Exception as exc:  # the successor then waits for the Lease to expire
        event("release_failed", level=logging.WARNING, error=str(exc))
    server.shutdown()
    client.destroy()
    event("stopped", recovered_total=reconciler.recovered_total)
    return 0
