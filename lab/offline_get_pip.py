"""A stand-in for pip's ``get-pip.py``, so that ``ansible-test sanity`` works without its download host.

ansible-test creates a virtual environment for some sanity tests and bootstraps pip in it with a
``get-pip.py`` it downloads from its own CI file host, caching it as
``~/.ansible/test/cache/get_pip_<version>.py``. Where only PyPI is reachable that download fails.
This script does the same job: pip from CPython's bundled wheel (``ensurepip``), then
``pip install`` of exactly the packages ansible-test asked for (``pip==<version>``) from the
package index.

``python -m lab.offline_get_pip`` puts it into ansible-test's cache (once; an existing real
``get-pip.py`` there is left alone).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

GET_PIP_OPTIONS_WITHOUT_PIP_EQUIVALENT = ("--no-setuptools", "--no-wheel")


def bootstrap(args: list[str]) -> int:
    # In a child process: ensurepip.bootstrap() sets PIP_CONFIG_FILE=/dev/null in its caller's
    # environment, which would hide the machine's pip configuration (index, CA bundle) from the
    # install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
    wanted = [a for a in args if a not in GET_PIP_OPTIONS_WITHOUT_PIP_EQUIVALENT]
    return subprocess.call([sys.executable, "-m", "pip", "install", *wanted])


def install_into_cache() -> Path:
    from ansible_test._internal.python_requirements import get_venv_packages
    from ansible_test._internal.util import version_to_str

    class _Python:  # get_venv_packages only reads .version
        version = version_to_str(sys.version_info[:2])

    pip_version = get_venv_packages(_Python())["pip"]
    target = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{pip_version.replace('.', '_')}.py"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(__file__, target)
    return target


if __name__ == "__main__":
    if Path(sys.argv[0]).name.startswith("get_pip_"):  # run by ansible-test from its cache
        sys.exit(bootstrap(sys.argv[1:]))
    print("ansible-test pip bootstrap:", install_into_cache())
