# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""DBOS queue depth: the SQL, the two ways of reading it, and the replica count it calls for.

The SQL lives here only: the keda role's postgresql trigger runs the same query.
"""

from __future__ import annotations

import json
import math
import re
import ssl

# Statuses of workflows on a queue: ENQUEUED waits, PENDING runs (or was orphaned), DELAYED is not yet
# eligible. DBOS's partial index covers status IN ('ENQUEUED', 'PENDING').
STATUSES = ("ENQUEUED", "PENDING", "DELAYED")
IN_FLIGHT = ("ENQUEUED", "PENDING")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class QueueDepthError(Exception):
    """A one-line, actionable reason the depth could not be read."""


def count_query(statuses, schema="dbos", application_name=None, application_version=None, group_by_version=False):
    """(SQL, parameters) counting a queue's workflows in ``statuses``; psycopg placeholders.

    One COUNT with equality on ``queue_name`` and ``status``, the leading columns of DBOS's partial
    index on in-flight workflows (which INCLUDEs ``application_name``): an index-only scan. Status
    names are inlined from a fixed set, so the planner can match the index's predicate.
    """
    statuses = list(dict.fromkeys(statuses))
    unknown = [s for s in statuses if s not in STATUSES]
    if not statuses or unknown:
        raise QueueDepthError(f"statuses must be some of {', '.join(STATUSES)}; got {statuses}")
    if not _IDENTIFIER.match(schema):
        raise QueueDepthError(f"schema must be a plain SQL identifier, got {schema!r}")
    in_list = ", ".join(f"'{s}'" for s in statuses)
    where = [f"queue_name = %(queue)s AND status IN ({in_list})"]
    params = {}
    if application_name is not None:
        where.append("application_name = %(application_name)s")
        params["application_name"] = application_name
    if application_version is not None:
        where.append("application_version = %(application_version)s")
        params["application_version"] = application_version
    table = f'"{schema}".workflow_status'
    if group_by_version:
        sql = (f"SELECT application_version, count(*) FROM {table} WHERE {' AND '.join(where)} "
               "GROUP BY application_version ORDER BY application_version")
    else:
        sql = f"SELECT count(*) FROM {table} WHERE {' AND '.join(where)}"
    return sql, params


# DBOS refuses an empty queue name and reserves the prefix of its internal queues.
RESERVED_QUEUE_PREFIX = "_dbos_"


def queue_name_problem(name):
    """Why ``name`` is not a DBOS queue name one can scale on, or None if it is one."""
    if not isinstance(name, str) or not name:
        return "a DBOS queue name is a non-empty string"
    if name.startswith(RESERVED_QUEUE_PREFIX):
        return f"queue names starting with {RESERVED_QUEUE_PREFIX!r} are DBOS's internal queues"
    if name != name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a queue name has no control characters and no leading or trailing whitespace"
    return None


def sql_literal(value):
    """``value`` as a PostgreSQL string literal, correct whatever standard_conforming_strings is."""
    value = str(value)
    if "\x00" in value:
        raise QueueDepthError("a NUL character cannot be part of a PostgreSQL string")
    quoted = value.replace("'", "''")
    if "\\" in value:
        return "E'" + quoted.replace("\\", "\\\\") + "'"
    return f"'{quoted}'"


def literal_count_query(queue, statuses, schema="dbos", application_name=None, application_version=None):
    """:func:`count_query` with its parameters written in as literals: one self-contained statement for
    a client that cannot bind parameters, such as KEDA's postgresql trigger."""
    problem = queue_name_problem(queue)
    if problem:
        raise QueueDepthError(f"{queue!r} is not a DBOS queue name: {problem}")
    sql, params = count_query(statuses, schema, application_name, application_version)
    params["queue"] = queue
    return sql % {name: sql_literal(value) for name, value in params.items()}


def desired_replicas(queue_length, target_per_replica, min_replicas, max_replicas):
    """What KEDA (through the HPA) asks for: ceil(queue_length / target), kept within [min, max].

    With ``min_replicas`` 0 an empty queue asks for 0 replicas (KEDA scales to zero); with 1 or more,
    an empty queue asks for ``min_replicas``.
    """
    if target_per_replica <= 0:
        raise QueueDepthError(f"target_per_replica must be positive, got {target_per_replica}")
    if not 0 <= min_replicas <= max_replicas:
        raise QueueDepthError(f"0 <= min_replicas ({min_replicas}) <= max_replicas ({max_replicas}) must hold")
    wanted = math.ceil(queue_length / target_per_replica) if queue_length > 0 else 0
    return min(max(wanted, min_replicas), max_replicas)


def value_at(document, location):
    """The number at a dotted path (``queue_length``, ``data.0.depth``) of a parsed JSON document, as
    KEDA's metrics-api trigger reads ``valueLocation``."""
    value = document
    for part in location.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise QueueDepthError(f"the response has no field {location!r} (value_location); it was: "
                                  f"{json.dumps(document)[:200]}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QueueDepthError(f"field {location!r} is not a number: {json.dumps(value)[:100]}")
    try:
        number = float(value)
    except ValueError:
        raise QueueDepthError(f"field {location!r} is not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise QueueDepthError(f"field {location!r} is not a queue length: {value!r}")
    return int(number) if number.is_integer() else number


def parse_metrics_body(body, location):
    try:
        document = json.loads(body)
    except ValueError:
        raise QueueDepthError(f"the metrics endpoint did not answer JSON: {body[:120]!r}") from None
    return value_at(document, location)


def redact(url):
    """A connection URL with its password hidden, for messages."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


class UrlSource:
    """Reads the depth from an HTTP(S) metrics endpoint, like KEDA's metrics-api trigger.

    One TLS context for all polls: ``open_url`` would build one per call, and building one loads
    the CA store (tens of milliseconds, far more than the request). A plain-http URL gets a client
    context that trusts nothing, made without reading the store; it is only ever used if the
    endpoint redirects to https, and then fails verification (give the https URL instead).
    """

    def __init__(self, params):
        from ansible.module_utils.urls import Request, make_context

        self.params = params
        if params["url"].lower().startswith("https://"):
            context = make_context(cafile=params.get("ca_path"), validate_certs=params["validate_certs"])
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.request = Request(headers={"Accept": "application/json"}, timeout=params["timeout"], context=context)

    def read(self):
        p = self.params
        try:
            response = self.request.open("GET", p["url"])
            body = response.read().decode("utf-8", "replace")
        except Exception as e:  # urllib, TLS and socket errors all mean: could not read it
            raise QueueDepthError(f"could not GET {p['url']}: {e} (check url, timeout, validate_certs/ca_path)") \
                from None
        return parse_metrics_body(body, p["value_location"]), None

    def close(self):
        pass


class DatabaseSource:
    """Reads the depth with one COUNT over DBOS's system tables; one connection for all polls."""

    def __init__(self, params):
        try:
            import psycopg
        except ImportError:
            raise QueueDepthError("source=database needs the Python package psycopg (pip install 'psycopg[binary]') "
                                  "where the module runs") from None
        self.psycopg = psycopg
        self.params = params
        self.conn = None
        self.sql, self.sql_params = count_query(
            params["statuses"], params["schema"], params.get("application_name"),
            params.get("application_version"), params.get("group_by") == "application_version")
        self.sql_params["queue"] = params["queue"]

    def _connect(self):
        url = self.params["database_url"].replace("postgresql+psycopg://", "postgresql://", 1)
        try:
            return self.psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(self.params["timeout"])))
        except self.psycopg.ProgrammingError as e:
            reason = str(e).strip().splitlines()[0]
            raise QueueDepthError(f"database_url is not a PostgreSQL URL ({reason}); expected "
                                  "postgresql://user:password@host:5432/database") from None
        except self.psycopg.OperationalError as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise QueueDepthError(f"could not connect to {redact(url)}: {reason}") from None

    def read(self):
        if self.conn is None or self.conn.closed:
            self.conn = self._connect()
        try:
            rows = self.conn.execute(self.sql, self.sql_params).fetchall()
        except self.psycopg.errors.UndefinedTable:
            self.close()
            raise QueueDepthError(f"no table {self.params['schema']}.workflow_status in this database: DBOS is not "
                                  "migrated there (run dbos migrate) or schema is wrong") from None
        except self.psycopg.Error as e:
            self.close()
            raise QueueDepthError(f"the queue depth query failed: {str(e).strip().splitlines()[0]}") from None
        if self.params.get("group_by") == "application_version":
            by_version = {version if version is not None else "": count for version, count in rows}
            return sum(by_version.values()), by_version
        return rows[0][0], None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class WaitTimeout(QueueDepthError):
    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


def poll(params, clock, sleep):
    """Read once, or until ``wait_until`` holds; returns the module's result (without ``changed``)."""
    source = UrlSource(params) if params["source"] == "url" else DatabaseSource(params)
    limit = (params.get("wait_until") or {}).get("queue_length_at_most")
    start = clock()
    polls = 0
    try:
        while True:
            queue_length, by_version = source.read()
            polls += 1
            elapsed = clock() - start
            result = {
                "queue_length": queue_length,
                "desired_replicas": desired_replicas(queue_length, params["target_per_replica"],
                                                     params["min_replicas"], params["max_replicas"]),
                "elapsed_ms": round(elapsed * 1000, 1),
                "polls": polls,
            }
            if by_version is not None:
                result["by_version"] = by_version
            if limit is None or queue_length <= limit:
                return result
            if elapsed + params["interval"] > params["wait_timeout"]:
                raise WaitTimeout(f"queue {params['queue']} still has {queue_length} workflows (more than "
                                  f"{limit}) after {elapsed:.1f} s (wait_timeout {params['wait_timeout']})", result)
            sleep(params["interval"])
    finally:
        source.close()
