"""Fixtures for every test: the lab (see lab/pytest_plugin.py)."""

pytest_plugins = ["lab.pytest_plugin"]
