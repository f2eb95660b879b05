"""Mitogen's ``mitogen_linear`` strategy, with the list of installed collections read once per run and
no CPU pinning.

ansible.cfg selects this strategy. Mitogen (the ``mitogen`` package, pinned in requirements.txt) runs
a host's modules in one Python process that lives for the whole run, instead of a new process per task
that imports ansible's module code, boto3 and the kubernetes client again each time.

Two changes to Mitogen's own ``mitogen_linear``.

The list of installed collections: for the first module of a collection in each task,
``ansible_mitogen.planner._load_collections`` lists every installed collection directory
(``ansible.collections.list.list_collection_dirs``; 94 collections with the ``ansible`` package). Its
cache lives in the worker process, and ansible forks a new worker for every task, so the list was
read again for every task that runs a collection's module. Installed collections do not change during
a run: here the list is read once in the controller, before the first worker is forked, and every
worker inherits it. A site.yml re-run on the lab: 29-31 s with Mitogen's strategy, 23-27 s with this one
(``make bench-site``).

CPU pinning: Mitogen pins its processes to CPUs (``ansible_mitogen.affinity``). On a machine with 2
or 3 CPUs it keeps one for its connection multiplexer and pins the controller, the workers and every
process they start (the one running the modules, helm, ...) to the others, so with 2 CPUs all of a
run's work shares one CPU, and so do two runs started at once. Measured on 2 CPUs, two site.yml
re-runs at once: 52-55 s each with the pinning, 27-31 s without it; one re-run alone: ~26 s with it,
~25 s without. Here the operating system places the processes (Mitogen's no-op ``Policy``).

Both changes replace Mitogen internals (``ansible_mitogen.planner._load_collections``, which
``ansible_mitogen.planner.invoke`` calls, and ``ansible_mitogen.affinity.policy``); a Mitogen that renamed
one would leave the replacement unused, and the run would go on without the change: this module refuses
to load instead, naming what it did not find.

At ``-vvv`` each play says it runs with this strategy, and which Mitogen.

``ANSIBLE_STRATEGY=linear`` runs the playbooks with ansible's stock strategy; the roles do not depend
on Mitogen.
"""

from __future__ import annotations

from ansible.errors import AnsibleError

try:
    import ansible_mitogen.affinity
    import ansible_mitogen.loaders  # before planner and strategy: it checks the ansible-core version
    import ansible_mitogen.planner
    import ansible_mitogen.strategy
except ImportError as error:
    raise AnsibleError(
        "ansible.cfg selects the mitogen_linear strategy, which needs the mitogen package "
        "(pip install -r requirements.txt -c constraints.txt); ANSIBLE_STRATEGY=linear runs without it"
    ) from error

import mitogen
from ansible.collections.list import list_collection_dirs
from ansible.utils.display import Display

display = Display()
MITOGEN_VERSION = ".".join(map(str, mitogen.__version__))
STRATEGY = "mitogen_linear (strategy_plugins/mitogen_linear.py)"


def _missing_patch_targets() -> list[str]:
    """The Mitogen internals replaced below that the installed Mitogen does not have (as used here)."""
    planner, affinity = ansible_mitogen.planner, ansible_mitogen.affinity
    invoke = getattr(planner, "invoke", None)
    invoke_names = getattr(getattr(invoke, "__code__", None), "co_names", ())
    policy_class = getattr(affinity, "Policy", None)
    targets = {
        "ansible_mitogen.planner._load_collections (a function)": callable(getattr(planner, "_load_collections", None)),
        "ansible_mitogen.planner.invoke, calling _load_collections": "_load_collections" in invoke_names,
        "ansible_mitogen.affinity.Policy (a class)": isinstance(policy_class, type),
        "ansible_mitogen.affinity.policy (a Policy)": isinstance(policy_class, type)
        and isinstance(getattr(affinity, "policy", None), policy_class),
    }
    return [name for name, found in targets.items() if not found]


if _missing := _missing_patch_targets():
    raise AnsibleError(
        f"strategy_plugins/mitogen_linear.py replaces Mitogen internals that Mitogen {MITOGEN_VERSION} does not "
        f"have: {'; '.join(_missing)}. Use the Mitogen version requirements.txt pins, or adapt the strategy to "
        "this one; ANSIBLE_STRATEGY=linear runs without Mitogen"
    )

_collection_dirs: list[str] | None = None


def _installed_collection_dirs() -> list[str]:
    global _collection_dirs  # noqa: PLW0603 - read once per controller process, inherited by workers
    if _collection_dirs is None:
        _collection_dirs = [path.decode("utf-8") for path in list_collection_dirs()]
    return _collection_dirs


def _load_collections(invocation) -> None:
    """ansible_mitogen.planner._load_collections, with the directory list kept for the whole run."""
    invocation._extra_sys_paths.update(_installed_collection_dirs())


ansible_mitogen.planner._load_collections = _load_collections
ansible_mitogen.affinity.policy = ansible_mitogen.affinity.Policy()  # places nothing

Base = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, Base):
    def run(self, iterator, play_context, *args, **kwargs):
        display.vvv(f"Running with strategy {STRATEGY}, Mitogen {MITOGEN_VERSION}")
        _installed_collection_dirs()  # before the first worker is forked
        return super().run(iterator, play_context, *args, **kwargs)
