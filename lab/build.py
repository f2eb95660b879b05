"""Build the lab's Kubernetes components from their Go modules into the cache, once per machine.

Usage: ``python -m lab.build [--cache DIR] [--force] [COMPONENT ...]`` (``make lab-build``). Prints
one line per component: built (with its time), or already in the cache. A component is built into a
fresh folder that is moved into place only once every binary of it is built, so an interrupted build
leaves nothing that looks finished.

Needs ``go`` (1.26) and the Go module proxy; the module and build caches are Go's own (``go env
GOMODCACHE GOCACHE``), outside the checkout too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.components import COMPONENTS, Component, cache_dir

STAMP = "built.json"


class BuildError(RuntimeError):
    pass


def go(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["go", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def module_dir(module: str, version: str) -> Path:
    """The module's source in Go's module cache, downloaded if missing."""
    info = json.loads(go("mod", "download", "-json", f"{module}@{version}", cwd=Path(tempfile.gettempdir())))
    if info.get("Error"):
        raise BuildError(f"{module}@{version}: {info['Error']}")
    return Path(info["Dir"])


def _replace_block(go_mod: str) -> list[tuple[str, str]]:
    """(old, new) of every ``replace`` directive of a go.mod, both sides with their versions."""
    lines = []
    for block in re.findall(r"^replace\s*\((.*?)^\)", go_mod, re.S | re.M):
        lines += block.splitlines()
    lines += re.findall(r"^replace\s+([^(\n].*)$", go_mod, re.M)
    pairs = []
    for raw in lines:
        line = raw.split("//", 1)[0].strip()
        if "=>" in line:
            old, new = (side.strip() for side in line.split("=>", 1))
            pairs.append((old, new))
    return pairs


def wrapper_go_mod(component: Component, source: Path) -> str:
    """The wrapper module's go.mod: require the component, and replace as it needs."""
    replaces = []
    if component.replaces == "staging":
        # k8s.io/kubernetes replaces each staging module with ./staging/src/k8s.io/<name>; the same
        # code is published as k8s.io/<name> v0.<minor>.<patch>
        published = "v0." + component.version.split(".", 1)[1]
        for old, new in _replace_block((source / "go.mod").read_text()):
            if new.startswith("./staging/"):
                replaces.append(f"{old.split()[0]} => {old.split()[0]} {published}")
    elif component.replaces == "copy":
        for old, new in _replace_block((source / "go.mod").read_text()):
            if new.startswith((".", "/")):
                raise BuildError(f"{component.module} replaces {old} with a local path ({new}): not buildable")
            replaces.append(f"{old} => {new}")
    body = (f"module dbos.deploy/lab/build/{component.name}\n\ngo 1.26\n\n"
            f"require {component.module} {component.version}\n")
    if replaces:
        body += "\nreplace (\n" + "".join(f"\t{r}\n" for r in replaces) + ")\n"
    return body


def build(component: Component, cache: Path) -> float:
    """Build every binary of ``component`` into the cache; returns the seconds it took."""
    t0 = time.monotonic()
    source = module_dir(component.module, component.version)
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{component.key}-", dir=cache))
    work.chmod(0o755)
    try:
        wrapper = work / "src"
        wrapper.mkdir()
        (wrapper / "go.mod").write_text(wrapper_go_mod(component, source))
        if component.main:
            (wrapper / "main.go").write_text(component.main)
        env = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", **component.env}
        if component.main:  # a main package of its own: its imports decide the requirements
            go("mod", "tidy", cwd=wrapper, env=env)
        out = work / "bin"
        for binary, package in component.binaries.items():
            go("build", "-trimpath", "-ldflags", " ".join(("-s", "-w", *component.ldflags)), "-o",
               str(out / binary), package, cwd=wrapper, env=env)
        (work / STAMP).write_text(json.dumps({
            "component": component.name, "module": component.module, "version": component.version,
            "binaries": sorted(component.binaries), "go": go("env", "GOVERSION").strip(),
            "seconds": round(time.monotonic() - t0, 1)}, indent=2) + "\n")
        final = cache / component.key
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return time.monotonic() - t0


def is_built(component: Component, cache: Path) -> bool:
    return (cache / component.key / STAMP).is_file() and all(
        component.path(b, cache).is_file() for b in component.binaries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("components", nargs="*", help=f"of {', '.join(COMPONENTS)} (default: all)")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: $DBOS_LAB_CACHE or "
                                                                 "~/.cache/dbos-deploy/lab)")
    parser.add_argument("--force", action="store_true", help="rebuild even if built")
    args = parser.parse_args(argv)
    cache = args.cache or cache_dir()
    unknown = [c for c in args.components if c not in COMPONENTS]
    if unknown:
        parser.error(f"unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    if shutil.which("go") is None:
        print("lab.build: go is not on PATH (Go 1.26 is needed to build the lab's Kubernetes)", file=sys.stderr)
        return 2
    failed = 0
    for name in args.components or COMPONENTS:
        component = COMPONENTS[name]
        if is_built(component, cache) and not args.force:
            print(f"{component.key:<28} in the cache ({cache / component.key})", flush=True)
            continue
        print(f"{component.key:<28} building ...", flush=True)
        try:
            seconds = build(component, cache)
        except BuildError as e:
            failed += 1
            print(f"{component.key:<28} FAILED: {e}", flush=True)
            continue
        print(f"{component.key:<28} built in {seconds:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
