"""Unit tests for the filter dbos.deploy.job_outcome, through Jinja as a role uses it."""

from ansible_collections.dbos.deploy.plugins.filter.job_outcome import FilterModule
from jinja2 import Environment


def render(expression: str, **values):
    env = Environment()
    env.filters.update({f"dbos.deploy.{k}": v for k, v in FilterModule().filters().items()})
    return env.from_string("{{ " + expression + " }}").render(**values)


def test_an_existing_complete_job_and_no_job_at_all():
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    expression = "(jobs | first | default({})) | dbos.deploy.job_outcome == 'Complete'"
    assert render(expression, jobs=[complete]) == "True"
    assert render(expression, jobs=[]) == "False"


def test_mapped_over_jobs():
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    running = {"status": {"active": 1}}
    assert render("jobs | map('dbos.deploy.job_outcome') | list", jobs=[failed, running]) == "['Failed', None]"
