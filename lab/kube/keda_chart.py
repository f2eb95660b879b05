"""The lab's KEDA chart, assembled at lab start from the KEDA Go module at the version the lab runs.

KEDA's Helm chart lives in a repository of its own (kedacore/charts), not in the Go module, and no
chart repository is reachable here. The module ships the manifests that chart is made of
(``config/``): the CRDs, the ServiceAccount, the RBAC, the operator's and the metrics adapter's
Deployments and Services, and the APIService. :func:`assemble` writes them into a chart, as they
are, except for what a controller run as a process on 127.0.0.1 needs (:data:`CHANGES`, also in the
chart's description):
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab import procs
from lab.components import COMPONENTS

NAMESPACE_PLACEHOLDER = "lab-release-namespace"
CERT_SECRET = "kedaorg-certs"  # the operator's --cert-secret-name default, which both Deployments mount
CHANGES = (
    "the namespace is the release's (upstream writes keda);",
    "the operator does not generate its own certificate (--enable-cert-rotation=false): it would be "
    "for the Service names, which a process on 127.0.0.1 cannot answer to. The chart carries one the "
    f"lab made, in the Secret {CERT_SECRET} both Deployments mount, valid for 127.0.0.1 and the Service names;",
    "the operator's gRPC metrics service and the adapter listen on chosen ports of 127.0.0.1, and the "
    "adapter reaches the operator there (--metrics-service-address), not through the operator's Service;",
    "the adapter's Service is an ExternalName naming 127.0.0.1 with the adapter's port, and the APIService "
    "names that port and trusts the lab's CA: the aggregation layer reaches the adapter on this machine "
    "(a normal Service cannot: Endpoints refuse loopback addresses);",
    "no admission webhooks: the API server would call them through a Service address.",
)
__doc__ += "".join(f"\n- {change}" for change in CHANGES) + "\n"

# upstream's config/ folders, in the order kustomize's default overlay lists them
SOURCES = ("service_account/service_account.yaml", "rbac/role.yaml", "rbac/role_binding.yaml",
           "metrics-server/role.yaml", "metrics-server/role_binding.yaml", "manager/manager.yaml",
           "manager/service.yaml", "metrics-server/deployment.yaml", "metrics-server/service.yaml",
           "metrics-server/api_service.yaml")
OPERATOR, ADAPTER = "keda-operator", "keda-metrics-apiserver"


def module_config() -> Path:
    from lab import build

    keda = COMPONENTS["keda"]
    return build.module_dir(keda.module, keda.version) / "config"


def certificate(namespace: str) -> dict[str, bytes]:
    """A CA and one certificate signed by it for both ends of every KEDA connection (as KEDA's own
    cert rotation makes one for all): server and client, for 127.0.0.1 and the Services' names."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab KEDA CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for service in (OPERATOR, ADAPTER):
        names += [x509.DNSName(f"{service}.{namespace}.svc"), x509.DNSName(f"{service}.{namespace}.svc.cluster.local")]
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OPERATOR)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return {"ca.crt": ca.public_bytes(pem), "tls.crt": leaf.public_bytes(pem),
            "tls.key": key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())}


def _set_args(args: list[str], values: dict[str, str]) -> list[str]:
    """``args`` with each ``--flag`` of ``values`` set to its value (replaced, or added)."""
    kept = [a for a in args if a.split("=", 1)[0] not in values]
    return kept + [f"{flag}={value}" for flag, value in values.items()]


def _container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


def manifests(config: Path, namespace: str, adapter_port: int, grpc_port: int, certs: dict[str, bytes]) -> list[dict]:
    """Upstream's manifests with :data:`CHANGES` made; namespaces are :data:`NAMESPACE_PLACEHOLDER`."""
    docs = [d for name in SOURCES for d in yaml.safe_load_all((config / name).read_text()) if d]
    grpc = f"127.0.0.1:{grpc_port}"
    for doc in docs:
        meta = doc["metadata"]
        if meta.get("namespace") == "keda":
            meta["namespace"] = NAMESPACE_PLACEHOLDER
        for subject in doc.get("subjects", []):
            if subject.get("namespace") == "keda":
                subject["namespace"] = NAMESPACE_PLACEHOLDER
        if meta.get("labels", {}).get("app.kubernetes.io/version") == "latest":
            meta["labels"]["app.kubernetes.io/version"] = COMPONENTS["keda"].version.removeprefix("v")
        kind, name = doc["kind"], meta["name"]
        if kind == "Deployment" and name == OPERATOR:
            container = _container(doc)
            container["args"] = _set_args(container["args"], {
                "--enable-cert-rotation": "false", "--cert-dir": "/certs", "--metrics-service-bind-address": grpc})
        elif kind == "Deployment" and name == ADAPTER:
            container = _container(doc)
            container["args"] = _set_args(container["args"], {
                "--secure-port": str(adapter_port), "--bind-address": "127.0.0.1", "--metrics-service-address": grpc})
        elif kind == "Service" and name == ADAPTER:
            doc["spec"] = {"type": "ExternalName", "externalName": "127.0.0.1",
                           "ports": [{"name": "https", "port": adapter_port, "protocol": "TCP"}]}
        elif kind == "APIService":
            doc["spec"]["service"].update(namespace=NAMESPACE_PLACEHOLDER, port=adapter_port)
            doc["spec"]["caBundle"] = base64.b64encode(certs["ca.crt"]).decode()
    docs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                 "metadata": {"name": CERT_SECRET, "namespace": NAMESPACE_PLACEHOLDER,
                              "labels": {"app.kubernetes.io/name": CERT_SECRET,
                                         "app.kubernetes.io/part-of": "keda-operator"}},
                 "data": {k: base64.b64encode(v).decode() for k, v in certs.items()}})
    return docs


def assemble(target: Path, namespace: str = "keda") -> dict:
    """Write the chart into ``target`` (for a release in ``namespace``: the certificate names its
    Services there); the ports chosen, and where the chart is."""
    config = module_config()
    adapter_port, grpc_port = procs.free_port(), procs.free_port()
    certs = certificate(namespace)
    (target / "templates").mkdir(parents=True, exist_ok=True)
    (target / "crds").mkdir(exist_ok=True)
    for crd in sorted((config / "crd" / "bases").glob("*.yaml")):
        (target / "crds" / crd.name).write_text(crd.read_text())
    version = COMPONENTS["keda"].version.removeprefix("v")
    description = (f"KEDA {version}, assembled by the lab from the manifests in KEDA's Go module (config/), "
                   "changed only for controllers run as processes on 127.0.0.1: " + " ".join(CHANGES))
    (target / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "keda", "version": version, "appVersion": version, "type": "application",
        "description": description}, sort_keys=False))
    text = yaml.safe_dump_all(manifests(config, namespace, adapter_port, grpc_port, certs), sort_keys=False)
    path = target / "templates" / "keda.yaml"
    path.write_text(text.replace(NAMESPACE_PLACEHOLDER, "{{ .Release.Namespace }}"))
    path.chmod(0o600)  # it holds the certificate's key
    return {"chart": str(target), "namespace": namespace, "adapter_port": adapter_port,
            "operator_grpc": f"127.0.0.1:{grpc_port}"}
