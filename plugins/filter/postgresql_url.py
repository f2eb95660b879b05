# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter dbos.deploy.postgresql_url: a libpq connection URL, every part percent-encoded."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from ansible.errors import AnsibleFilterError


def postgresql_url(parts):
    """``postgresql://user:password@host:port/database?sslmode=...`` from a dict of those parts."""
    if not isinstance(parts, dict):
        raise AnsibleFilterError(f"postgresql_url expects a dict, got {type(parts).__name__}")
    missing = [k for k in ("user", "host", "database") if not parts.get(k)]
    if missing:
        raise AnsibleFilterError(f"postgresql_url: missing {', '.join(missing)}")
    userinfo = quote(str(parts["user"]), safe="")
    if parts.get("password") not in (None, ""):
        userinfo += ":" + quote(str(parts["password"]), safe="")
    host = str(parts["host"])
    if ":" in host and not host.startswith("["):  # an IPv6 address
        host = f"[{host}]"
    port = f":{int(parts['port'])}" if parts.get("port") not in (None, "") else ""
    query = {"sslmode": parts["sslmode"]} if parts.get("sslmode") else {}
    url = f"postgresql://{userinfo}@{host}{port}/{quote(str(parts['database']), safe='')}"
    return url + ("?" + urlencode(query) if query else "")


class FilterModule:
    def filters(self):
        return {"postgresql_url": postgresql_url}
