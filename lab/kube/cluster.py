"""The lab's real Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler at the versions of :mod:`lab.components`, started as local processes by kwokctl's
binary runtime, with kwok faking the nodes and the pods' life cycle.

Built by ``make lab-build`` (:mod:`lab.build`) into the cache outside the checkout. kwokctl is given
every binary as a local path (it downloads nothing then), every port (chosen free here, so that labs
run side by side: kwokctl's own picker does not see another lab's ports), and ``127.0.0.1`` as the
address every component binds to (its default is ``0.0.0.0``). Authorization (``Node,RBAC``) and
the API server's default admission plugins are on, as on EKS.

What kwok does not give and the lab sets itself:

- ``--advertise-address=127.0.0.1``: kube-apiserver otherwise looks for the host's default route
  and exits without one. With it, the ``kubernetes`` Service gets no endpoints (Endpoints refuse
  loopback addresses); ``--endpoint-reconciler-type=none`` says so instead of logging an error a
  second. Nothing in the lab reaches the API server through that Service.
- One fake node (kwokctl's template), whose address and pod CIDR are on loopback (:data:`NODE_IP`,
  :data:`POD_CIDR`) instead of kwok's defaults, which are routed off this machine.
- The aggregation layer's front proxy (``--requestheader-*``), which kwokctl leaves half set up:
  KEDA's metrics adapter is an aggregated API server (see :func:`kwokctl_config`).
- kwok's ``Logs`` kind, so that kwok serves the logs the runner keeps (``kubectl logs``).
- The HPA controller's sync period, 3 s (:data:`HPA_SYNC_SECONDS`; 15 s by default and on EKS): a
  lab timing, so that the autoscaling tests watch scale-ups and scale-ins in a minute or two.
- Stages (:func:`stages`): kwok leaves the runner's pods to the runner, and fails the pods of
  :data:`FAILING_IMAGE`.
"""

from __future__ import annotations

import copy
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import yaml

from lab import procs
from lab.components import COMPONENTS, ETCD, KUBERNETES

NAME = "lab"
KWOK = COMPONENTS["kwok"]
BINARIES = {  # kwokctl option -> (component, binary)
    "etcdBinary": ("etcd", "etcd"),
    "kubeApiserverBinary": ("kubernetes", "kube-apiserver"),
    "kubeControllerManagerBinary": ("kubernetes", "kube-controller-manager"),
    "kubeSchedulerBinary": ("kubernetes", "kube-scheduler"),
    "kwokControllerBinary": ("kwok", "kwok"),
}
PORTS = ("kubeApiserverPort", "etcdPort", "etcdPeerPort", "kubeControllerManagerPort", "kubeSchedulerPort",
         "kwokControllerPort")


# kwok's defaults are 192.0.2.1 (which can be the host's gateway) and 10.0.0.0/24, both routed off
# this machine. On loopback, nothing that dials a node or a pod can leave it; Endpoints and
# EndpointSlices refuse loopback addresses, so Services have no endpoints and the API server's
# service proxy answers 503 without dialing anything.
NODE_IP = "127.0.0.1"
# A Job's pod running this image fails, as if its command had exited 1 (see stages()); no registry
# has it (.invalid is reserved): only the lab gives it a meaning.
FAILING_IMAGE = "lab.invalid/fails:exit-1"
# the common name of kwokctl's admin certificate, which it gives the API server as its front-proxy
# client certificate
PROXY_CLIENT_NAME = "kwok-admin"
POD_CIDR = "127.1.0.0/24"
HPA_SYNC_SECONDS = 3  # kube-controller-manager's --horizontal-pod-autoscaler-sync-period here


class ClusterError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    """The binaries kwokctl needs that are not built yet (``make lab-build`` builds them)."""
    paths = [COMPONENTS[c].path(b) for c, b in BINARIES.values()] + [KWOK.path("kwokctl")]
    return [str(p) for p in paths if not p.is_file()]


STAGES = ("node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
          "pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml")


def stages(host_run: dict[str, list[str]], repositories: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """kwok's default stages (from its module, the ones kwokctl would use), except that

    - kwok leaves the runner's pods alone: those with a label of ``host_run`` (label -> values), the
      controllers', and those with a container of an image whose repository is one of
      ``repositories`` (:mod:`lab.kube.images`). The runner reports their status, Ready once their
      probe answers, their exit codes, and removes them once deleted and their process is gone, as
      a kubelet does (kwok's ``pod-ready``, ``pod-complete`` and ``pod-delete`` would not wait);
    - a Job's pod whose container runs :data:`FAILING_IMAGE` fails (exit code 1) where kwok's
      ``pod-complete`` would make it succeed: how a test makes a Job fail without running a
      container (stage ``lab-pod-fail``)."""
    from lab import build
    from lab.kube import images

    root = build.module_dir(KWOK.module, KWOK.version) / "kustomize" / "stage"
    docs = [yaml.safe_load((root / name).read_text()) for name in STAGES]
    image = {"key": ".spec.containers.[].image", "values": [FAILING_IMAGE]}
    not_the_runners = [{"key": f'.metadata.labels["{label}"]', "operator": "NotIn", "values": sorted(values)}
                       for label, values in sorted(host_run.items())]
    if repositories:
        not_the_runners.append({"key": images.kwok_repository_query(), "operator": "NotIn",
                                "values": sorted(repositories)})
    for doc in list(docs):
        name = doc["metadata"]["name"]
        if name == "pod-complete":
            failing = copy.deepcopy(doc)
            doc["spec"]["selector"]["matchExpressions"].append({**image, "operator": "NotIn"})
            failing["metadata"]["name"] = "lab-pod-fail"
            failing["spec"]["selector"]["matchExpressions"].append({**image, "operator": "In"})
            template = failing["spec"]["next"]["statusTemplate"]
            failing["spec"]["next"]["statusTemplate"] = (
                template.replace("exitCode: 0", "exitCode: 1").replace("reason: Completed", "reason: Error")
                .replace("phase: Succeeded", "phase: Failed"))
            assert "phase: Failed" in failing["spec"]["next"]["statusTemplate"], "kwok's pod-complete stage changed"
            docs.append(failing)
        if name in ("pod-ready", "pod-complete", "pod-delete"):
            doc["spec"]["selector"]["matchExpressions"].extend(copy.deepcopy(not_the_runners))
    return docs


def kwokctl_config(ports: dict[str, int], kubectl: str, host_run: dict[str, list[str]] | None = None,
                   workdir: Path | None = None, repositories: tuple[str, ...] = ()) -> list[dict]:
    """The KwokctlConfiguration for one lab (its cluster under ``workdir``), and the stages kwok plays."""
    ca = cluster_dir(workdir or Path(".")) / "pki" / "ca.crt"  # kwokctl writes its CA there
    options = {
        "runtime": "binary",
        "kubeVersion": f"v{KUBERNETES}",
        "etcdVersion": ETCD,
        "bindAddress": "127.0.0.1",
        "kubeAuthorization": True,
        "kubeAdmission": True,
        "kubectlBinary": kubectl,
        # kwok serves a pod's container logs from the file a Logs object names (lab/kube/runner.py
        # writes them for the pods it runs), and `kubectl port-forward` to where a PortForward object
        # says (the pod's own loopback address); the API server reaches kwok at the node's address,
        # 127.0.0.1, for both
        "enableCRDs": ["Logs", "PortForward"],
        "quietPull": True,
        **{option: str(COMPONENTS[c].path(b)) for option, (c, b) in BINARIES.items()},
        **ports,
    }
    return [{
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": options,
        "componentsPatches": [{"name": "kube-apiserver", "extraArgs": [
            {"key": "advertise-address", "value": "127.0.0.1"},
            {"key": "endpoint-reconciler-type", "value": "none"},
            # the aggregation layer's front proxy, as kubeadm sets it up: kwokctl gives the API server
            # its client certificate (--proxy-client-*, its admin's) but not the CA an extension API
            # server (KEDA's metrics adapter) checks it with; without it the adapter refuses every
            # aggregated request. That CA also signs ordinary clients, so only the proxy's name may
            # send the identity headers (the API server refuses to start otherwise).
            *({"key": key, "value": value} for key, value in (
                ("requestheader-client-ca-file", str(ca)),
                ("requestheader-allowed-names", PROXY_CLIENT_NAME),
                ("requestheader-username-headers", "X-Remote-User"),
                ("requestheader-group-headers", "X-Remote-Group"),
                ("requestheader-extra-headers-prefix", "X-Remote-Extra-"))),
        ]}, {"name": "kube-controller-manager", "extraArgs": [
            # the HPA controller's period (15 s by default, and on EKS): the lab's autoscaling tests and
            # make demo-autoscale watch several scale-ups and scale-ins within a minute or two
            {"key": "horizontal-pod-autoscaler-sync-period", "value": f"{HPA_SYNC_SECONDS}s"},
        ]}],
    }, *stages(host_run or {}, repositories)]


def _kwokctl(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {"KWOK_WORKDIR": str(workdir), "PATH": "/usr/bin:/bin", "HOME": str(workdir)}
    done = subprocess.run([str(KWOK.path("kwokctl")), "--name", NAME, *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise ClusterError(f"kwokctl {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def cluster_dir(workdir: Path) -> Path:
    return workdir / "clusters" / NAME


def _ssl_context(kubeconfig: Path) -> ssl.SSLContext:
    doc = yaml.safe_load(kubeconfig.read_text())
    cluster, user = doc["clusters"][0]["cluster"], doc["users"][0]["user"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    context.load_cert_chain(user["client-certificate"], user["client-key"])
    return context


def get(server: str, path: str, context: ssl.SSLContext, timeout: float = 5) -> tuple[int, bytes]:
    """GET ``path`` from the API server as the lab's admin."""
    try:
        with urllib.request.urlopen(f"{server}{path}", context=context, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def addon_crd_folders() -> list[Path]:
    """The add-ons' CustomResourceDefinitions, in the Go modules of the versions the lab runs: KEDA's
    (``config/crd/bases``) and Sealed Secrets' (its chart's ``crds``)."""
    from lab import build

    keda, sealed = COMPONENTS["keda"], COMPONENTS["sealed-secrets"]
    return [build.module_dir(keda.module, keda.version) / "config" / "crd" / "bases",
            build.module_dir(sealed.module, sealed.version) / "helm" / "sealed-secrets" / "crds"]


def apply_crds(kubeconfig: str, folder: Path, timeout: float = 30) -> list[str]:
    """Create the CustomResourceDefinitions of every YAML file in ``folder`` (an upstream module's own,
    at the version the lab runs) and wait until each is Established; their names."""
    from kubernetes import client, config

    api = config.new_client_from_config(kubeconfig)
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                extensions.create_custom_resource_definition(doc)
                names.append(doc["metadata"]["name"])

    def established():
        for name in names:
            status = extensions.read_custom_resource_definition(name).status
            if not any(c.type == "Established" and c.status == "True" for c in (status.conditions or [])):
                return False
        return True

    procs.wait_until(established, timeout, f"CRDs {', '.join(names)} established")
    api.close()
    return names


def ready(kubeconfig: str, server: str) -> bool:
    """Does the API server answer /readyz with 200?"""
    return get(server, "/readyz", _ssl_context(Path(kubeconfig)))[0] == 200


def start(directory: Path, kubectl: str, timeout: float = 120) -> tuple[dict, list[procs.Proc]]:
    """Start the control plane under ``directory/kwok``; (facts for the state file, its processes).
    kwok leaves the pods of :data:`lab.kube.runner.CONTROLLERS` to the runner (see :func:`stages`)."""
    from lab.kube.images import REPOSITORIES
    from lab.kube.runner import host_run_labels
    missing = missing_binaries()
    if missing:
        raise ClusterError("the lab's Kubernetes is not built (run `make lab-build`, about 40 min the first "
                           f"time); missing: {', '.join(missing)}")
    t0 = time.monotonic()
    workdir = directory / "kwok"
    if cluster_dir(workdir).exists():
        shutil.rmtree(cluster_dir(workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {name: procs.free_port() for name in PORTS}
    config = workdir / "lab.yaml"
    config.write_text(yaml.safe_dump_all(kwokctl_config(ports, kubectl, host_run_labels(), workdir,
                                                         REPOSITORIES), sort_keys=False))
    started: list[procs.Proc] = []
    try:
        _kwokctl(workdir, "--config", str(config), "create", "cluster", "--kubeconfig", "", "--timeout",
                 f"{int(timeout)}s")
        started = _processes(workdir)
        kubeconfig = cluster_dir(workdir) / "kubeconfig.yaml"
        server = f"https://127.0.0.1:{ports['kubeApiserverPort']}"
        context = _ssl_context(kubeconfig)
        procs.wait_until(lambda: get(server, "/readyz", context)[0] == 200, timeout, "kube-apiserver /readyz")
        # the node's and its pods' addresses on loopback: whatever dials them stays on this machine
        _kwokctl(workdir, "--config", str(config), "scale", "node", "--replicas", "1",
                 "--param", f'.nodeIPs=["{NODE_IP}"]', "--param", f'.podCIDRs=["{POD_CIDR}"]')
        version = json.loads(get(server, "/version", context)[1])["gitVersion"]
    except BaseException:
        stop(started, workdir)
        raise
    facts = {"server": server, "kubeconfig": str(kubeconfig), "version": version, "workdir": str(workdir),
             "ports": ports, "startup_seconds": round(time.monotonic() - t0, 2)}
    return facts, started


def _processes(workdir: Path) -> list[procs.Proc]:
    """The processes kwokctl started, from its pid files, as the lab records processes."""
    found = []
    for pid_file in sorted((cluster_dir(workdir) / "pids").glob("*.pid")):
        pid = int(pid_file.read_text().strip())
        try:
            found.append(procs.Proc.of(f"kube:{pid_file.stem}", pid,
                                       str(cluster_dir(workdir) / "logs" / f"{pid_file.stem}.log")))
        except psutil.NoSuchProcess:
            raise ClusterError(f"{pid_file.stem} exited at once; see {cluster_dir(workdir) / 'logs'}") from None
    if not found:
        raise ClusterError(f"kwokctl started nothing; see {cluster_dir(workdir) / 'logs'}")
    return found


def stop(processes: list[procs.Proc], workdir: Path | None = None) -> None:
    """Stop the control plane's processes, etcd last (each takes 1-3 s to shut down gracefully, so
    the others stop together), and forget the cluster."""
    first = [p for p in processes if p.name != "kube:etcd"]
    with ThreadPoolExecutor(max(1, len(first))) as pool:
        list(pool.map(procs.stop, first))
    for proc in processes:
        if proc.name == "kube:etcd":
            procs.stop(proc)
    if workdir is not None and cluster_dir(workdir).exists():
        shutil.rmtree(cluster_dir(workdir), ignore_errors=True)
