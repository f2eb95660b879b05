"""Configuration from the environment, checked once at start.

Every variable, its default and its meaning is listed in ``sample_app/README.md``. Invalid values
stop the process at start with a message naming the variable, rather than failing later.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from dataclasses import dataclass

APP_NAME = "dbos-sample-app"
QUEUE_NAME = "taskQueue"
DEFAULT_DATABASE_URL = "sqlite:///dbos-sample-app.sqlite"


class SettingsError(ValueError):
    """A configuration value that cannot work; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    system_database_url: str = DEFAULT_DATABASE_URL
    conductor_url: str | None = None
    conductor_key: str | None = None
    app_version: str | None = None
    executor_id: str = "local"
    worker_concurrency: int = 2
    port: int = 8080
    shutdown_grace_seconds: float = 25.0
    max_sleep_seconds: float = 86400.0
    run_migrations: bool = True

    def __repr__(self) -> str:  # never print credentials (database URL password, Conductor key)
        return (f"Settings(database={redact_url(self.system_database_url)}, conductor_url={self.conductor_url}, "
                f"conductor_key={'set' if self.conductor_key else 'unset'}, app_version={self.app_version}, "
                f"executor_id={self.executor_id}, worker_concurrency={self.worker_concurrency}, port={self.port})")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        settings = cls(
            system_database_url=env.get("DBOS_SYSTEM_DATABASE_URL") or DEFAULT_DATABASE_URL,
            conductor_url=env.get("DBOS_CONDUCTOR_URL") or None,
            conductor_key=env.get("DBOS_CONDUCTOR_KEY") or None,
            app_version=env.get("DBOS_APP_VERSION") or None,
            # In a pod, HOSTNAME is the pod name; the app role also passes it explicitly (downward API).
            executor_id=env.get("DBOS_EXECUTOR_ID") or env.get("HOSTNAME") or socket.gethostname(),
            worker_concurrency=_integer(env, "WORKER_CONCURRENCY", 2, minimum=1),
            port=_integer(env, "PORT", 8080, minimum=1, maximum=65535),
            shutdown_grace_seconds=_number(env, "SHUTDOWN_GRACE_SECONDS", 25.0, minimum=0),
            max_sleep_seconds=_number(env, "MAX_SLEEP_SECONDS", 86400.0, minimum=0),
            run_migrations=_boolean(env, "DBOS_RUN_MIGRATIONS", True),
        )
        settings.check_environment(env)
        return settings

    def check_environment(self, env: dict[str, str]) -> None:
        scheme = self.system_database_url.split(":", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres", "postgresql+psycopg"):
            raise SettingsError(f"DBOS_SYSTEM_DATABASE_URL: unsupported scheme {scheme!r} "
                                "(use postgresql://... or sqlite:///FILE)")
        if self.conductor_key and importlib.util.find_spec("dbos_enterprise") is None:
            raise SettingsError("DBOS_CONDUCTOR_KEY is set, but Conductor support is not installed: install the "
                                "dbos-enterprise package (pip install 'dbos-sample-app[conductor]'), or unset the key")
        if self.conductor_url and not self.conductor_url.startswith(("ws://", "wss://")):
            raise SettingsError(f"DBOS_CONDUCTOR_URL must start with ws:// or wss://, got {self.conductor_url!r}")
        # A self-signed Conductor certificate is trusted through SSL_CERT_FILE, which Python's default
        # TLS context (used for the Conductor websocket) reads; a wrong path would only show up as a
        # TLS failure much later.
        ca_file = env.get("SSL_CERT_FILE")
        if ca_file and not os.access(ca_file, os.R_OK):
            raise SettingsError(f"SSL_CERT_FILE={ca_file} is not a readable file")

    def dbos_config(self) -> dict:
        config = {
            "name": APP_NAME,
            "system_database_url": self.system_database_url,
            "executor_id": self.executor_id,
            "run_migrations": self.run_migrations,
        }
        if self.app_version:
            config["application_version"] = self.app_version
        if self.conductor_key:
            config["conductor_key"] = self.conductor_key
        if self.conductor_url:
            config["conductor_url"] = self.conductor_url
        return config


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"


def _integer(env, name, default, minimum=None, maximum=None) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    _check_range(name, value, minimum, maximum)
    return value


def bounded_number(raw: str, name: str, minimum: float | None = None, maximum: float | None = None,
                   error: type[ValueError] = ValueError) -> float:
    """``raw`` as a finite number within the bounds, or ``error`` with a message naming ``name``."""
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {raw!r}")
    _check_range(name, value, minimum, maximum, error)
    return value


def _number(env, name, default, minimum=None) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    return bounded_number(raw, name, minimum, error=SettingsError)


def _boolean(env, name, default) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _check_range(name, value, minimum, maximum, error: type[ValueError] = SettingsError) -> None:
    if minimum is not None and value < minimum:
        raise error(f"{name} must be at least {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be at most {maximum:g}, got {value:g}")
