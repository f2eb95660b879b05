"""Fixtures for every test: the lab (see lab/pytest_plugin.py); and this working tree importable as
``ansible_collections.dbos.deploy``, so unit tests import the modules' code as Ansible does."""

import sys

import ansible_collections

from lab.ansible_run import working_tree_collections

pytest_plugins = ["lab.pytest_plugin"]

sys.path.insert(0, str(working_tree_collections()))
# the bundled collections (amazon.aws, ...) and this one, as one namespace package
ansible_collections.__path__.append(str(working_tree_collections() / "ansible_collections"))
