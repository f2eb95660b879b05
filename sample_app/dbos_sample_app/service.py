"""The DBOS sample service: an aiohttp server with a durable workflow queue.

Life cycle: the HTTP server listens at once and answers ``/healthz`` with 503 while DBOS launches
in the background; 200 once DBOS is launched and the queue is registered; 503 again from the first
SIGTERM, while running workflows finish (``SHUTDOWN_GRACE_SECONDS``). Queued workflows stay
ENQUEUED for the other replicas. Then the process exits 0.

``GET /metrics/{queue}`` is the queue depth KEDA polls: this application's workflows on the queue,
ENQUEUED ones unless ``statuses=ENQUEUED,PENDING`` (or ``PENDING``) says otherwise, of every
application version unless ``version=V`` names one, counted up to ``max=N`` when given. A parameter
given twice, with a value it cannot take, or not one of these is answered 400, naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import sqlite3
import sys
import time

import psycopg
from aiohttp import web
from dbos import DBOS

from dbos_sample_app.settings import APP_NAME, QUEUE_NAME, Settings, SettingsError, bounded_number, redact_url

log = logging.getLogger("dbos_sample_app")

STARTING, READY, DRAINING = "starting", "ready", "draining"
SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", dict)


# --- the workflow -------------------------------------------------------------------------------

@DBOS.step()
async def record_start(seconds: float) -> float:
    return seconds


@DBOS.step()
async def record_finish(seconds: float) -> str:
    return f"slept {seconds:g} s"


@DBOS.workflow()
async def sleep_workflow(seconds: float) -> str:
    """Sleep ``seconds`` durably: a restarted process resumes the sleep where it was, not anew."""
    await record_start(seconds)
    await DBOS.sleep_async(seconds)
    return await record_finish(seconds)


# --- queue depth ----------------------------------------------------------------------------------

# The statuses of DBOS's partial index idx_workflow_status_in_flight_v2: ENQUEUED waits, PENDING runs.
# Written into the SQL from this fixed set (the planner must see them to match the index's predicate).
IN_FLIGHT_STATUSES = ("ENQUEUED", "PENDING")
# The guide's metric: the workflows waiting.
DEFAULT_STATUSES = ("ENQUEUED",)
IN_FLIGHT = "FROM {table} WHERE queue_name = {p} AND {status}{extra} AND application_name = {p}{version}"
IN_FLIGHT_COUNT = "SELECT count(*) " + IN_FLIGHT
# At most n rows: the scan stops at the n-th counted workflow, so its cost is n's, not the backlog's.
# In the index's order, so that reading the table instead would mean sorting every match: the planner
# keeps to the index. n is a checked integer, written in (one prepared statement per bound; KEDA
# always sends the same).
BOUNDED_COUNT = ("SELECT count(*) FROM (SELECT 1 " + IN_FLIGHT + " ORDER BY status, priority, created_at "
                 "LIMIT {limit}) AS bounded")
# PostgreSQL's LIMIT is a bigint.
MAX_LIMIT = 2 ** 63 - 1


def _once(values: list[str], name: str) -> str | None:
    """The one value of query parameter ``name``, None if absent; ValueError if it is given more than once."""
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"give {name} once, got it {len(values)} times")
    return values[0]


def count_limit(values: list[str]) -> int | None:
    """The ``max`` query parameter of /metrics: None if absent, else a positive integer (ValueError)."""
    raw = _once(values, "max")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValueError(f"max must be a positive integer of at most {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def count_statuses(values: list[str]) -> tuple[str, ...]:
    """The ``statuses`` query parameter of /metrics: ENQUEUED if absent, else a comma-separated subset of
    ENQUEUED and PENDING, each once, returned in that order whatever order it was given in (ValueError)."""
    raw = _once(values, "statuses")
    if raw is None:
        return DEFAULT_STATUSES
    names = raw.split(",")
    if any(n not in IN_FLIGHT_STATUSES for n in names) or len(set(names)) != len(names):
        raise ValueError(f"statuses must be ENQUEUED, PENDING or ENQUEUED,PENDING (comma-separated, each once), "
                         f"got {raw!r}")
    return tuple(s for s in IN_FLIGHT_STATUSES if s in names)


def count_version(values: list[str]) -> str | None:
    """The ``version`` query parameter of /metrics: None (every version) if absent, else the application
    version to count, non-empty and without control characters (ValueError)."""
    raw = _once(values, "version")
    if raw is not None and (not raw or any(ord(c) < 32 or ord(c) == 127 for c in raw)):
        raise ValueError(f"version must be a non-empty application version without control characters, got {raw!r}")
    return raw


class PostgresQueueDepth:
    """Number of workflows of this application on a queue in some of the in-flight statuses (ENQUEUED,
    waiting, by default), of one application version or of all, on PostgreSQL.

    One COUNT with ``queue_name`` and ``status`` equality (``status IN`` for both statuses): an
    index-only scan of DBOS's partial index on in-flight workflows, which INCLUDEs ``application_name``
    for this filter. A ``version`` filter reads ``application_version``, which the index does not
    INCLUDE, so that count visits the heap, for the queue's in-flight rows only. One
    connection, kept open and used with a prepared statement per shape (statuses, version filter or
    not, bound), the queue, application and version bound as parameters; reopened once if it broke.
    With a ``limit`` the count stops at that many rows (see ``make bench-queue-depth`` for the cost of each).

    The connection plans with ``random_page_cost`` 1.1, PostgreSQL's suggested value for SSD storage
    (and AWS's advice for RDS when the indexes fit in memory), in place of the default 4, which
    models spinning disks. With 4, once most of the table is in flight (a young system with a
    backlog), the planner reads the whole table rather than the index, and the prepared statement's
    generic plan then does so for every queue, an empty one too. Measured with 10,000 queued, once
    autovacuum has run (``make bench-sample-app``, 2 cores): 3.5-4.2 ms per /metrics against 4.6-5.2
    ms, and 0.4-1.3 ms against 3.2-3.6 ms for an empty queue. For the minute or so after a burst of
    enqueues, until autovacuum has run, the count visits the table for each new row whatever this
    setting (6.6-8 ms at 10,000 in the same benchmark). The setting is this session's only.
    """

    table, placeholder, extra = "dbos.workflow_status", "%s", ""
    random_page_cost = 1.1

    def __init__(self, database_url: str):
        self.conninfo = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.conn: psycopg.AsyncConnection | None = None
        self.lock = asyncio.Lock()

    async def count(self, queue: str, limit: int | None = None, statuses: tuple[str, ...] = DEFAULT_STATUSES,
                    version: str | None = None) -> int:
        query, params = count_sql(self, limit, statuses, version is not None), count_params(queue, version)
        async with self.lock:
            for attempt in (1, 2):
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                        await self.conn.execute(f"SET random_page_cost = {self.random_page_cost}")
                    cursor = await self.conn.execute(query, params, prepare=True)
                    return (await cursor.fetchone())[0]
                except psycopg.OperationalError:
                    self.conn = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class SqliteQueueDepth:
    """The same count on SQLite, where the partial index is used only if the query repeats its
    predicate."""

    table, placeholder, extra = "workflow_status", "?", " AND status IN ('ENQUEUED', 'PENDING')"

    def __init__(self, database_url: str):
        self.path = database_url.removeprefix("sqlite:///")

    def _count(self, queue: str, limit: int | None, statuses: tuple[str, ...], version: str | None) -> int:
        query, params = count_sql(self, limit, statuses, version is not None), count_params(queue, version)
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(query, params).fetchone()[0]

    async def count(self, queue: str, limit: int | None = None, statuses: tuple[str, ...] = DEFAULT_STATUSES,
                    version: str | None = None) -> int:
        return await asyncio.to_thread(self._count, queue, limit, statuses, version)

    async def close(self) -> None:
        pass


def count_sql(depth: PostgresQueueDepth | SqliteQueueDepth, limit: int | None,
              statuses: tuple[str, ...] = DEFAULT_STATUSES, by_version: bool = False) -> str:
    """The exact count, or with ``limit`` the bounded one, of ``statuses`` (some of the in-flight ones),
    of one application version if ``by_version``, in ``depth``'s dialect; its parameters are
    :func:`count_params`'s."""
    unknown = set(statuses) - set(IN_FLIGHT_STATUSES)
    if not statuses or unknown:
        raise ValueError(f"statuses must be some of {', '.join(IN_FLIGHT_STATUSES)}, got {statuses!r}")
    counted = [s for s in IN_FLIGHT_STATUSES if s in statuses]  # one statement per set, not per order
    listed = ", ".join(f"'{s}'" for s in counted)
    status = f"status = {listed}" if len(counted) == 1 else f"status IN ({listed})"
    fields = {"table": depth.table, "p": depth.placeholder, "extra": depth.extra, "status": status,
              "version": f" AND application_version = {depth.placeholder}" if by_version else ""}
    if limit is None:
        return IN_FLIGHT_COUNT.format(**fields)
    return BOUNDED_COUNT.format(limit=int(limit), **fields)


def count_params(queue: str, version: str | None) -> tuple[str, ...]:
    """The parameters of :func:`count_sql`'s statement, in its placeholders' order."""
    return (queue, APP_NAME) if version is None else (queue, APP_NAME, version)


def queue_depth(database_url: str) -> PostgresQueueDepth | SqliteQueueDepth:
    return SqliteQueueDepth(database_url) if database_url.startswith("sqlite") else PostgresQueueDepth(database_url)


# --- HTTP -------------------------------------------------------------------------------------------

def _json(code: int, **body) -> web.Response:
    return web.json_response(body, status=code)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state["phase"] != READY:
        return _json(503, status=state["phase"])
    return _json(200, status="ok", version=state["version"], executor_id=request.app[SETTINGS].executor_id)


async def enqueue(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        seconds = bounded_number(request.match_info["seconds"], "seconds", 0,
                                 request.app[SETTINGS].max_sleep_seconds)
    except ValueError as exc:
        return _json(400, error=str(exc))
    if state["phase"] != READY:
        return _json(503, error=f"not accepting work: {state['phase']}")
    handle = await state["queue"].enqueue_async(sleep_workflow, seconds)
    return _json(200, workflow_id=handle.workflow_id, seconds=seconds, queue=QUEUE_NAME)


METRICS_PARAMETERS = frozenset({"max", "statuses", "version"})


async def metrics(request: web.Request) -> web.Response:
    """The queue's waiting workflows of this application; ``?statuses=ENQUEUED,PENDING`` counts running
    ones too (or ``PENDING`` those only), ``?version=V`` those of application version V only; with
    ``?max=N``, counted up to N only (then a lower bound)."""
    state = request.app[STATE]
    unknown = sorted(set(request.query) - METRICS_PARAMETERS)
    if unknown:  # a misspelt filter (versions=) would otherwise count every version
        takes = ", ".join(sorted(METRICS_PARAMETERS))
        return _json(400, error=f"unknown parameters {', '.join(unknown)}: /metrics takes {takes}")
    try:
        limit = count_limit(request.query.getall("max", []))
        statuses = count_statuses(request.query.getall("statuses", []))
        version = count_version(request.query.getall("version", []))
    except ValueError as exc:
        return _json(400, error=str(exc))
    if state.get("depth") is None:
        return _json(503, error=f"not ready: {state['phase']}")
    count = await state["depth"].count(request.match_info["queue"], limit, statuses, version)
    return _json(200, queue_length=count, queue_length_exact=limit is None or count < limit)


def make_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[STATE] = {"phase": STARTING, "version": settings.app_version, "queue": None, "depth": None}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/enqueue/{seconds}", enqueue)
    app.router.add_get("/metrics/{queue}", metrics)
    return app


# --- life cycle ------------------------------------------------------------------------------------

async def launch(app: web.Application) -> None:
    settings, state = app[SETTINGS], app[STATE]
    DBOS(config=settings.dbos_config())
    await asyncio.to_thread(DBOS.launch)  # blocks: recovery, migrations (unless disabled), queue runner
    state["queue"] = await DBOS.register_queue_async(QUEUE_NAME, worker_concurrency=settings.worker_concurrency)
    state["depth"] = queue_depth(settings.system_database_url)
    state["version"] = DBOS.application_version
    state["phase"] = READY
    event("started", version=state["version"], executor_id=settings.executor_id, queue=QUEUE_NAME,
          worker_concurrency=settings.worker_concurrency, port=settings.port,
          database=redact_url(settings.system_database_url), conductor=bool(settings.conductor_key))


async def drain(app: web.Application) -> None:
    """Stop dequeuing, let running workflows finish within the grace period, shut DBOS down."""
    settings, state = app[SETTINGS], app[STATE]
    state["phase"] = DRAINING
    event("draining", grace_seconds=settings.shutdown_grace_seconds)
    t0 = time.monotonic()
    await asyncio.to_thread(DBOS.destroy, workflow_completion_timeout_sec=math.ceil(settings.shutdown_grace_seconds))
    if state["depth"] is not None:
        await state["depth"].close()
    event("stopped", seconds=round(time.monotonic() - t0, 2))


async def serve(settings: Settings) -> int:
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    launching = asyncio.create_task(launch(app))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({launching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if launching.done() and launching.exception() is not None:
        event("launch_failed", level=logging.ERROR, error=str(launching.exception()))
        code = 1
    else:
        await stop.wait()
        if not launching.done():  # terminated while launching: let launch finish, then drain as usual
            await launching
    if code == 0:
        await drain(app)
    await runner.cleanup()
    return code


def event(name: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, name, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                "logger": record.name, "event": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
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
        settings = Settings.from_env()
    except SettingsError as exc:
        event("config_error", level=logging.ERROR, error=str(exc))
        return 2
    return asyncio.run(serve(settings))
