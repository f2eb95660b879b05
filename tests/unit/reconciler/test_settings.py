"""Unit tests for the reconciler's configuration: bad values stop it at start, naming the variable."""

import pytest
from dbos_reconciler.service import Settings, SettingsError

BASE = {"DBOS_SYSTEM_DATABASE_URL": "postgresql://app:secret@db:5432/dbos_app", "RECONCILER_NAMESPACE": "dbos",
        "RECONCILER_POD_NAME": "dbos-app-reconciler-abc", "RECONCILER_LEASE_NAME": "dbos-app-reconciler",
        "RECONCILER_EXECUTOR_PREFIX": "dbos-app-"}


def test_defaults_and_the_password_never_printed():
    settings = Settings.from_env(BASE)
    assert (settings.interval_seconds, settings.lease_seconds, settings.port) == (10.0, 15, 8080)
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("RECONCILER_INTERVAL_SECONDS", "-1", "RECONCILER_INTERVAL_SECONDS must be at least 0.1"),
    ("RECONCILER_INTERVAL_SECONDS", "0", "RECONCILER_INTERVAL_SECONDS must be at least 0.1"),
    ("RECONCILER_INTERVAL_SECONDS", "nan", "RECONCILER_INTERVAL_SECONDS must be at least 0.1"),
    ("RECONCILER_INTERVAL_SECONDS", "soon", "RECONCILER_INTERVAL_SECONDS must be a number"),
    ("RECONCILER_LEASE_SECONDS", "2", "RECONCILER_LEASE_SECONDS must be at least 3"),
    ("RECONCILER_LEASE_SECONDS", "1.5", "RECONCILER_LEASE_SECONDS must be a whole number"),
    ("PORT", "70000", "PORT must be at least 1 and at most 65535"),
    ("RECONCILER_EXECUTOR_PREFIX", "", "RECONCILER_EXECUTOR_PREFIX is required"),
    ("RECONCILER_LEASE_NAME", " ", "RECONCILER_LEASE_NAME is required"),
    ("DBOS_SYSTEM_DATABASE_URL", "sqlite:///x.sqlite", "DBOS_SYSTEM_DATABASE_URL must be a postgresql:// URL"),
])
def test_bad_values_are_refused_naming_the_variable(name, value, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**BASE, name: value})


def test_the_interval_must_leave_the_lease_fresh():
    message = r"RECONCILER_INTERVAL_SECONDS \(13\) must be less than RECONCILER_LEASE_SECONDS less 2"
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**BASE, "RECONCILER_INTERVAL_SECONDS": "13"})
    assert Settings.from_env({**BASE, "RECONCILER_INTERVAL_SECONDS": "12.5"}).interval_seconds == 12.5
