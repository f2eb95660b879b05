"""Unit tests for the filter dbos.deploy.postgresql_url."""

from urllib.parse import unquote, urlsplit

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.dbos.deploy.plugins.filter.postgresql_url import postgresql_url

PARTS = {"user": "dbos_app_role", "password": "p/w:@?#%+& =", "host": "db.example", "port": "5432",
         "database": "dbos_app", "sslmode": "require"}


def test_every_part_survives_a_round_trip_through_a_url_parser():
    url = postgresql_url(PARTS)
    parsed = urlsplit(url)
    assert (parsed.scheme, parsed.username, unquote(parsed.password), parsed.hostname, parsed.port,
            parsed.path, parsed.query) == ("postgresql", "dbos_app_role", PARTS["password"], "db.example", 5432,
                                           "/dbos_app", "sslmode=require")


def test_optional_parts_are_left_out():
    assert postgresql_url({"user": "u", "host": "h", "database": "d"}) == "postgresql://u@h/d"
    assert postgresql_url({"user": "u", "password": "", "host": "::1", "port": 5432, "database": "d",
                           "sslmode": ""}) == "postgresql://u@[::1]:5432/d"


@pytest.mark.parametrize(("parts", "message"), [("not a dict", "expects a dict"),
                                                ({"user": "u", "host": "h"}, "missing database")])
def test_bad_input_is_refused(parts, message):
    with pytest.raises(AnsibleFilterError, match=message):
        postgresql_url(parts)
