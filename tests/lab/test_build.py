"""lab/build.py: the wrapper modules it writes, from the real go.mod files of the pinned versions, and
the cache it fills (``make lab-build`` runs before ``make test``)."""

from __future__ import annotations

import json
import re
import subprocess

from lab import build
from lab.components import COMPONENTS, KUBERNETES, cache_dir


def test_kubernetes_staging_modules_are_replaced_by_their_published_versions():
    component = COMPONENTS["kubernetes"]
    source = build.module_dir(component.module, component.version)
    go_mod = build.wrapper_go_mod(component, source)
    staging = [old for old, new in build._replace_block((source / "go.mod").read_text()) if new.startswith("./")]
    assert len(staging) > 20
    published = "v0." + KUBERNETES.split(".", 1)[1]
    for module in staging:
        assert f"\t{module} => {module} {published}\n" in go_mod
    assert "./staging" not in go_mod
    assert f"require k8s.io/kubernetes v{KUBERNETES}\n" in go_mod


def test_keda_keeps_its_own_replacements():
    component = COMPONENTS["keda"]
    source = build.module_dir(component.module, component.version)
    upstream = build._replace_block((source / "go.mod").read_text())
    go_mod = build.wrapper_go_mod(component, source)
    assert upstream and all(f"\t{old} => {new}\n" in go_mod for old, new in upstream)


def test_replace_blocks_are_read_with_comments_and_single_lines():
    text = ("module x\n\nreplace (\n\t// pin\n\ta => a v1.0.0 // why\n\tb v1 => ./b\n)\n\n"
            "replace c => c v2.0.0\n")
    assert build._replace_block(text) == [("a", "a v1.0.0"), ("b v1", "./b"), ("c", "c v2.0.0")]


def test_every_component_is_built_and_says_its_version():
    cache = cache_dir()
    for component in COMPONENTS.values():
        assert build.is_built(component, cache), f"{component.key}: run make lab-build"
        stamp = json.loads((cache / component.key / build.STAMP).read_text())
        assert (stamp["module"], stamp["version"]) == (component.module, component.version)
    versions = {
        "etcd": ["etcd", "--version"],
        "kube-apiserver": ["kube-apiserver", "--version"],
        "kwokctl": ["kwokctl", "--version"],
        "controller": ["controller", "--version"],
    }
    owners = {"etcd": "etcd", "kube-apiserver": "kubernetes", "kwokctl": "kwok", "controller": "sealed-secrets"}
    for binary, argv in versions.items():
        component = COMPONENTS[owners[binary]]
        out = subprocess.run([str(component.path(argv[0])), *argv[1:]], capture_output=True, text=True,
                             check=False, timeout=30)
        text = out.stdout + out.stderr
        assert re.search(re.escape(component.version.lstrip("v")), text), (binary, text[:300])
