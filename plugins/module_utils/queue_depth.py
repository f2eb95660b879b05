# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""DBOS queue depth: the SQL, the two ways of reading it, and the replica count it calls for.

The SQL lives here only: the keda role's postgresql trigger runs the same query.

The replica count never needs more than ``max_replicas * target_per_replica`` workflows counted: at
that many or more, KEDA's formula gives ``max_replicas`` whatever the backlog. So the count stops
there (:func:`count_bound`), and its cost depends on the bound, not on the backlog; the queue length
it gives is then exact below the bound and a lower bound at it.
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


# PostgreSQL's LIMIT is a bigint.
MAX_BOUND = 2 ** 63 - 1


def positive_int(value, name):
    """``value`` as an int of at least 1 (an int, or a string of digits), else QueueDepthError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise QueueDepthError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit():
            raise QueueDepthError(f"{name} must be a positive integer, got {value!r}")
        value = int(value)
    if not 1 <= value <= MAX_BOUND:
        raise QueueDepthError(f"{name} must be a positive integer of at most {MAX_BOUND}, got {value}")
    return value


def count_bound(target_per_replica, max_replicas, queue_length_at_most=None):
    """How many workflows a count must reach to give the answer a full count gives.

    ``max_replicas * target_per_replica``: with that many queued, ceil(count / target) is already
    ``max_replicas``. With ``queue_length_at_most`` N (a wait), also N + 1, so that "more than N" is
    seen. At least 1: a count that stops at the bound says "at least this many".
    """
    if target_per_replica <= 0:
        raise QueueDepthError(f"target_per_replica must be positive, got {target_per_replica}")
    if max_replicas < 0:
        raise QueueDepthError(f"max_replicas must be 0 or more, got {max_replicas}")
    bound = max(target_per_replica * max_replicas, 1)
    if queue_length_at_most is not None:
        if queue_length_at_most < 0:
            raise QueueDepthError(f"queue_length_at_most must be 0 or more, got {queue_length_at_most}")
        bound = max(bound, queue_length_at_most + 1)
    return positive_int(bound, "the count's bound (max_replicas x target_per_replica)")


def bounded_reading(count, bound):
    """(queue_length, exact) from a count that stopped at ``bound`` (None: it did not stop): below the
    bound it is the exact length; at it, a lower bound."""
    return count, bound is None or count < bound


def count_query(statuses, schema="dbos", *, application_name=None, application_version=None, group_by_version=False,
                limit=None):
    """(SQL, parameters) counting a queue's workflows in ``statuses``; psycopg placeholders.

    One COUNT with equality on ``queue_name`` and ``status``, the leading columns of DBOS's partial
    index on in-flight workflows (which INCLUDEs ``application_name``): an index-only scan. Status
    names are inlined from a fixed set, so the planner can match the index's predicate.

    With ``limit`` n the count stops at n rows (``SELECT count(*) FROM (SELECT 1 ... LIMIT n)``): the
    scan reads at most n index entries that match, however many wait. The rows are taken in the
    index's own order (``ORDER BY status, priority, created_at``), so that a plan reading the table
    instead would have to sort every match: the planner keeps to the index even with stale
    statistics, where a bare LIMIT may be planned as a table scan that meets its first match late.
    n is written in, as an integer.
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
        if limit is not None:
            raise QueueDepthError("a count per application version is always exact: no limit with group_by")
        sql = (f"SELECT application_version, count(*) FROM {table} WHERE {' AND '.join(where)} "
               "GROUP BY application_version ORDER BY application_version")
    elif limit is not None:
        limit = positive_int(limit, "limit")
        sql = (f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {' AND '.join(where)} "
               f"ORDER BY status, priority, created_at LIMIT {limit}) AS bounded")
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


def literal_count_query(queue, statuses, schema="dbos", *, application_name=None, application_version=None, limit=None,
                        group_by_version=False):
    """:func:`count_query` with its parameters written in as literals: one self-contained statement for
    a client that cannot bind parameters, such as KEDA's postgresql trigger or psql in a Job."""
    problem = queue_name_problem(queue)
    if problem:
        raise QueueDepthError(f"{queue!r} is not a DBOS queue name: {problem}")
    sql, params = count_query(statuses, schema, application_name=application_name,
                              application_version=application_version, limit=limit,
                              group_by_version=group_by_version)
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


_MISSING = object()


def _lookup(document, location):
    """What a dotted path (``queue_length``, ``data.0.depth``) names in a parsed JSON document, or _MISSING."""
    value = document
    for part in location.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def value_at(document, location):
    """The number at a dotted path of a parsed JSON document, as KEDA's metrics-api trigger reads
    ``valueLocation``."""
    value = _lookup(document, location)
    if value is _MISSING:
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


def exactness_at(document, location):
    """The boolean at ``<location>_exact`` (the sample app's ``queue_length_exact``), or None if the
    answer has none: whether the number is the exact depth or a lower bound (a bounded count)."""
    value = _lookup(document, f"{location}_exact")
    if value is _MISSING:
        return None
    if not isinstance(value, bool):
        raise QueueDepthError(f"field {location + '_exact'!r} is not a boolean: {json.dumps(value)[:100]}")
    return value


def parse_metrics_body(body, location):
    """(number at ``location``, its exactness flag or None) from a metrics endpoint's JSON answer."""
    try:
        document = json.loads(body)
    except ValueError:
        raise QueueDepthError(f"the metrics endpoint did not answer JSON: {body[:120]!r}") from None
    return value_at(document, location), exactness_at(document, location)


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
        return (*parse_metrics_body(body, p["value_location"]), None)

    def close(self):
        pass


class DatabaseSource:
    """Reads the depth with one COUNT over DBOS's system tables; one connection for all polls.

    ``bound``: count at most this many (see :func:`count_bound`); None for the exact count.
    """

    def __init__(self, params, bound=None):
        try:
            import psycopg
        except ImportError:
            raise QueueDepthError("source=database needs the Python package psycopg (pip install 'psycopg[binary]') "
                                  "where the module runs") from None
        self.psycopg = psycopg
        self.params = params
        self.conn = None
        self.bound = bound
        self.sql, self.sql_params = count_query(
            params["statuses"], params["schema"], application_name=params.get("application_name"),
            application_version=params.get("application_version"),
            group_by_version=params.get("group_by") == "application_version", limit=bound)
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
            return sum(by_version.values()), True, by_version
        return (*bounded_reading(rows[0][0], self.bound), None)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class WaitTimeout(QueueDepthError):
    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


def source_for(params):
    """The source ``params`` ask for, and the bound of its count (None: the count is exact, or the
    endpoint decides it)."""
    limit = (params.get("wait_until") or {}).get("queue_length_at_most")
    # Checked first, so that a bound is never computed from impossible settings.
    desired_replicas(0, params["target_per_replica"], params["min_replicas"], params["max_replicas"])
    needed = count_bound(params["target_per_replica"], params["max_replicas"], limit)
    if params["source"] == "url":
        return UrlSource(params), None, needed
    exact = params.get("exact_count") or params.get("group_by") == "application_version"
    bound = None if exact else needed
    return DatabaseSource(params, bound), bound, needed


def check_answer(params, queue_length, exact, needed):
    """Refuse an endpoint's lower bound that is too low to decide on (its bound is below ours)."""
    if exact is not False:
        return
    if params.get("exact_count"):
        raise QueueDepthError(f"the endpoint answered a lower bound ({queue_length}), not the exact count that "
                              "exact_count asks for: drop the bound (max=) from the url")
    if queue_length < needed:
        raise QueueDepthError(
            f"the endpoint counted only up to {queue_length} (its bound) but deciding needs a count up to {needed} "
            "(max_replicas x target_per_replica, or wait_until's queue_length_at_most + 1): raise the url's "
            f"max= to at least {needed}")


def poll(params, clock, sleep):
    """Read once, or until ``wait_until`` holds; returns the module's result (without ``changed``)."""
    source, bound, needed = source_for(params)
    limit = (params.get("wait_until") or {}).get("queue_length_at_most")
    start = clock()
    polls = 0
    try:
        while True:
            queue_length, exact, by_version = source.read()
            check_answer(params, queue_length, exact, needed)
            polls += 1
            elapsed = clock() - start
            result = {
                "queue_length": queue_length,
                "queue_length_exact": exact,
                "count_bound": bound,
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
                at_least = "" if exact is not False else "at least "
                raise WaitTimeout(f"queue {params['queue']} still has {at_least}{queue_length} workflows (more than "
                                  f"{limit}) after {elapsed:.1f} s (wait_timeout {params['wait_timeout']})", result)
            sleep(params["interval"])
    finally:
        source.close()
