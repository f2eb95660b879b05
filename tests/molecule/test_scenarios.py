"""The molecule scenarios (molecule/), each run with `molecule test` against a lab of its own.

`make test-all` runs them: the default scenario (the whole site: converge, idempotence, verify,
teardown) and the per-role scenarios, which converge the site again role by role. `make test` leaves
them out: the site's converge, idempotence and teardown on the real control plane are
tests/site/test_real_cluster.py's, and the scenarios do not fit CI's 30 minutes beside the rest.
"""

from __future__ import annotations

import pytest

from lab import molecule
from lab.core import Lab


@pytest.fixture
def own_lab(tmp_path):
    lab = Lab.up(tmp_path / "lab")
    yield lab
    lab.down()


def run(lab: Lab, scenario: str, tmp_path) -> str:
    log = tmp_path / f"molecule-{scenario}.log"
    result = molecule.run(lab, scenario, log)
    text = log.read_text()
    assert result.returncode == 0, text[-6000:]
    # every step of the sequence ran: none was skipped for want of a playbook
    for step in ("syntax", "prepare", "converge", "idempotence", "verify"):
        assert f"{step}: Executed: Successful" in text, f"{scenario}: {step} did not run\n{text[-3000:]}"
    return text


@pytest.mark.test_all
def test_default_scenario_converges_the_site_idempotently_verifies_and_tears_down(own_lab, tmp_path):
    text = run(own_lab, "default", tmp_path)
    assert "cleanup: Executed: Successful" in text


@pytest.mark.test_all
def test_each_role_scenario(own_lab, tmp_path):
    for scenario in ("eks", "rds", "addons", "secrets", "migrate", "app", "keda"):
        run(own_lab, scenario, tmp_path)
