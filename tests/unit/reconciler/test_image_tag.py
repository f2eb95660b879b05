"""The app role deploys the reconciler's image by the tag of the package it is built from."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_the_roles_default_tag_is_the_packages_version():
    version = tomllib.loads((ROOT / "reconciler" / "pyproject.toml").read_text())["project"]["version"]
    defaults = yaml.safe_load((ROOT / "roles" / "app" / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROOT / "roles" / "app" / "meta" / "argument_specs.yml").read_text())
    assert defaults["app_reconciler_image_tag"] == version
    assert specs["argument_specs"]["main"]["options"]["app_reconciler_image_tag"]["default"] == version
