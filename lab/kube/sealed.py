"""Sealed Secrets controller stand-in: what the real controller does with keys and SealedSecrets.

Written from the controller's documented behaviour (bitnami-labs/sealed-secrets: pkg/crypto/crypto.go,
pkg/controller/keys.go, pkg/apis/sealedsecrets/v1alpha1), independently of the collection's sealing
module, so that the tests check one implementation against another:

* When a controller Deployment (label ``app.kubernetes.io/name=sealed-secrets``) exists and its
  namespace holds no key yet, it generates one: RSA 4096 with a self-signed certificate
  (CN and O ``sealed-secret``, ten years), stored as a ``kubernetes.io/tls`` Secret
  ``sealed-secrets-key<suffix>`` labelled ``sealedsecrets.bitnami.com/sealed-secrets-key=active``.
  The emulator serves that certificate at the controller Service's ``/v1/cert.pem`` through the
  API's service proxy, as the controller does.
* Each SealedSecret, in any namespace, is unsealed with any of the controller's keys into the Secret
  it describes, owned by the SealedSecret; its status gets condition ``Synced`` (``True``, or
  ``False`` with the reason), and ``observedGeneration``.
"""

from __future__ import annotations

import base64
import datetime
import secrets
import struct
import time

from kubernetes import client

KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
CONTROLLER_SELECTOR = "app.kubernetes.io/name=sealed-secrets"
GROUP, VERSION, PLURAL = "bitnami.com", "v1alpha1", "sealedsecrets"
KEY_BITS = 4096
NAMESPACE_WIDE = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE = "sealedsecrets.bitnami.com/cluster-wide"


class UnsealError(Exception):
    pass


def generate_key(bits: int = KEY_BITS) -> tuple[bytes, bytes]:
    """(private key PEM, certificate PEM), as the controller makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealed-secret")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def load_private_key(pem: bytes):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


def hybrid_decrypt(private_keys: list, blob: bytes, label: bytes) -> bytes:
    """crypto.HybridDecrypt: try each key on the RSA-OAEP part, then open the AES-GCM part."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < 2:
        raise UnsealError("ciphertext too short")
    (rsa_len,) = struct.unpack(">H", blob[:2])
    wrapped, sealed = blob[2:2 + rsa_len], blob[2 + rsa_len:]
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label)
    for key in private_keys:
        try:
            session_key = key.decrypt(wrapped, oaep)
        except ValueError:
            continue
        try:
            return AESGCM(session_key).decrypt(b"\0" * 12, sealed, None)
        except InvalidTag:
            raise UnsealError("AES-GCM authentication failed") from None
    raise UnsealError("no key could decrypt secret")


def scope_label(metadata: dict) -> bytes:
    """The label the controller decrypts with, from the SealedSecret's own annotations."""
    annotations = metadata.get("annotations") or {}
    if annotations.get(CLUSTER_WIDE) == "true":
        return b""
    if annotations.get(NAMESPACE_WIDE) == "true":
        return metadata["namespace"].encode()
    return f"{metadata['namespace']}/{metadata['name']}".encode()


def unseal(sealed: dict, private_keys: list) -> dict:
    """The Secret a SealedSecret describes (SealedSecret.Unseal)."""
    md, spec = sealed["metadata"], sealed.get("spec") or {}
    label = scope_label(md)
    template = spec.get("template") or {}
    data, errors = {}, []
    for key, value in (spec.get("encryptedData") or {}).items():
        try:
            data[key] = base64.b64encode(hybrid_decrypt(private_keys, base64.b64decode(value), label)).decode()
        except (UnsealError, ValueError) as e:
            errors.append(f"{key}: {e}")
    if errors:
        raise UnsealError(", ".join(sorted(errors)))
    metadata = dict(template.get("metadata") or {})
    metadata.update(name=md["name"], namespace=md["namespace"], ownerReferences=[{
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "SealedSecret", "name": md["name"], "uid": md["uid"],
        "controller": True}])
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": template.get("type") or "Opaque",
            "data": data}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class SealedSecretsController:
    """One reconcile pass per :meth:`step`, driven by the status stand-in's loop."""

    def __init__(self, api: client.ApiClient, key_bits: int = KEY_BITS):
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.key_bits = key_bits
        self.done: dict[str, tuple] = {}  # SealedSecret uid -> (generation, keys) last reconciled
        # (key Secret uid, resourceVersion) -> its parsed private key: parsing a PEM key on every step
        # (four a second) took nearly all of the stand-in's CPU, about 40% of a core
        self.parsed_keys: dict[tuple[str, str], object] = {}

    def controller_namespaces(self) -> list[str]:
        deployments = self.apps.list_deployment_for_all_namespaces(label_selector=CONTROLLER_SELECTOR).items
        return sorted({d.metadata.namespace for d in deployments})

    def keys(self, namespace: str) -> list:
        found = self.core.list_namespaced_secret(namespace, label_selector=KEY_LABEL).items
        keys = []
        for secret in found:
            if not secret.data:
                continue
            version = (secret.metadata.uid, secret.metadata.resource_version)
            if version not in self.parsed_keys:
                self.parsed_keys[version] = load_private_key(base64.b64decode(secret.data["tls.key"]))
            keys.append(self.parsed_keys[version])
        return keys

    def ensure_key(self, namespace: str) -> None:
        if self.core.list_namespaced_secret(namespace, label_selector=KEY_LABEL).items:
            return
        key_pem, cert_pem = generate_key(self.key_bits)
        self.core.create_namespaced_secret(namespace, {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "sealed-secrets-key" + secrets.token_hex(3)[:5], "labels": {KEY_LABEL: "active"}},
            "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}})

    def step(self) -> None:
        namespaces = self.controller_namespaces()
        if not namespaces:
            return
        private_keys = []
        for namespace in namespaces:
            self.ensure_key(namespace)
            private_keys += self.keys(namespace)
        for sealed in self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]:
            md = sealed["metadata"]
            state = (md.get("generation"), len(private_keys))
            if self.done.get(md["uid"]) != state:
                # one at a time, as the controller: a failure on one never holds up the others; 404 (it,
                # or its namespace, is gone: the emulator collects no garbage) leaves nothing to do
                try:
                    self.reconcile(sealed, private_keys)
                except client.ApiException as e:
                    if e.status != 404:
                        print(f"sealed-secrets stand-in: {md['namespace']}/{md['name']}: {e.status} {e.reason}",
                              flush=True)
                        continue
                self.done[md["uid"]] = state

    def reconcile(self, sealed: dict, private_keys: list) -> None:
        md = sealed["metadata"]
        try:
            secret = unseal(sealed, private_keys)
            self._write_secret(md["namespace"], secret)
            condition = {"type": "Synced", "status": "True"}
        except (UnsealError, client.ApiException) as e:
            reason = e.reason if isinstance(e, client.ApiException) else str(e)
            condition = {"type": "Synced", "status": "False", "reason": "ErrUnsealFailed", "message": reason}
        now = _now()
        condition.update(lastUpdateTime=now, lastTransitionTime=now)
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, md["namespace"], PLURAL, md["name"], {
            "status": {"observedGeneration": md.get("generation"), "conditions": [condition]}})

    def _write_secret(self, namespace: str, secret: dict) -> None:
        name = secret["metadata"]["name"]
        try:
            current = self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as e:
            if e.status != 404:
                raise
            self.core.create_namespaced_secret(namespace, secret)
            return
        owners = current.metadata.owner_references or []
        if not any(o.kind == "SealedSecret" and o.name == name for o in owners):
            raise client.ApiException(status=409, reason="Resource already exists and is not managed by SealedSecret")
        self.core.replace_namespaced_secret(name, namespace, secret)
