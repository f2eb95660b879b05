# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Sealing Kubernetes Secrets for the Sealed Secrets controller (bitnami-labs/sealed-secrets).

The format is the controller's own (pkg/crypto/crypto.go, pkg/apis/sealedsecrets/v1alpha1):
each value is sealed on its own with a fresh 32-byte AES key,

    uint16-BE(len(rsa)) || rsa = RSA-OAEP-SHA256(public key, AES key, label)
                        || AES-256-GCM(AES key, nonce = 12 zero bytes, value, no associated data)

and the base64 (standard alphabet) of that goes in ``spec.encryptedData[key]``. The OAEP label binds
the value to where it may be unsealed: ``namespace/name`` (strict scope, the default), ``namespace``
(namespace-wide) or empty (cluster-wide); the scope is recorded in annotations the controller reads.

Re-sealing is decided without keeping plaintext anywhere: the SealedSecret carries an HMAC-SHA256 of
everything that went into it, values and certificate included, keyed with a secret that is not in the
files (a vaulted value of the inventory). If the same inputs give the same digest, the existing file is
kept byte for byte. Without the key, the digest tells nothing about the values: a guess at a
password cannot be checked against it offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import struct
from types import SimpleNamespace

from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client

API_VERSION = "bitnami.com/v1alpha1"
SCOPES = ("strict", "namespace-wide", "cluster-wide")
SCOPE_ANNOTATIONS = {
    "namespace-wide": "sealedsecrets.bitnami.com/namespace-wide",
    "cluster-wide": "sealedsecrets.bitnami.com/cluster-wide",
}
DIGEST_ANNOTATION = "dbos.dev/plaintext-hmac"
DIGEST_PREFIX = "hmac-sha256:"
# The HMAC key's least length: it is the only thing between a digest and an offline guess.
DIGEST_KEY_MIN_LENGTH = 32
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


class SealingError(Exception):
    """A one-line reason sealing could not be done, saying what to fix."""


def _crypto():
    """The ``cryptography`` pieces used here, imported when first needed."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:
        raise SealingError(f"the Python package 'cryptography' is needed on the control node ({e})") from None
    return SimpleNamespace(x509=x509, hashes=hashes, serialization=serialization, padding=padding, rsa=rsa,
                           AESGCM=AESGCM)


def is_dns_label(value) -> bool:
    """An RFC 1123 label: what Kubernetes accepts as a namespace name."""
    return isinstance(value, str) and _DNS_LABEL.fullmatch(value) is not None


def label_for(scope: str, namespace: str, name: str) -> bytes:
    """The OAEP label for a scope, as the controller computes it (EncryptionLabel)."""
    if scope == "cluster-wide":
        return b""
    if scope == "namespace-wide":
        return namespace.encode()
    return f"{namespace}/{name}".encode()


def load_public_key(pem: bytes):
    """The RSA public key of a controller certificate (or of a bare public key), as PEM."""
    c = _crypto()
    try:
        if b"CERTIFICATE" in pem:
            key = c.x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = c.serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise SealingError(f"the controller certificate is not a PEM certificate or public key ({e})") from None
    if not isinstance(key, c.rsa.RSAPublicKey):
        raise SealingError("the controller certificate must hold an RSA key")
    return key


def fingerprint(public_key) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo: which controller key a value was sealed for."""
    c = _crypto()
    der = public_key.public_bytes(c.serialization.Encoding.DER, c.serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def hybrid_encrypt(public_key, plaintext: bytes, label: bytes) -> bytes:
    c = _crypto()
    session_key = os.urandom(32)
    wrapped = public_key.encrypt(session_key, c.padding.OAEP(
        mgf=c.padding.MGF1(algorithm=c.hashes.SHA256()), algorithm=c.hashes.SHA256(), label=label))
    # a zero nonce is safe here: every AES key seals exactly one value
    sealed = c.AESGCM(session_key).encrypt(b"\0" * 12, plaintext, None)
    return struct.pack(">H", len(wrapped)) + wrapped + sealed


def validate(name: str, namespace: str, data: dict, scope: str) -> None:
    if scope not in SCOPES:
        raise SealingError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not is_dns_subdomain(name):
        raise SealingError(f"name {name!r} is not a valid Secret name (lower-case DNS subdomain)")
    if not is_dns_label(namespace):
        raise SealingError(f"namespace {namespace!r} is not a valid namespace name")
    if not data:
        raise SealingError(f"Secret {namespace}/{name} has no data to seal")
    bad = sorted(k for k in data if not _DATA_KEY.match(k))
    if bad:
        raise SealingError(f"Secret {namespace}/{name}: invalid data key(s) {bad} (letters, digits, '-', '_', '.')")
    empty = sorted(k for k, v in data.items() if v is None or v == "")
    if empty:
        raise SealingError(f"Secret {namespace}/{name}: empty value for key(s) {empty}")


def _canonical(spec: dict, key_fingerprint: str) -> bytes:
    return json.dumps({"v": 1, "certificate": key_fingerprint, **spec}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()


def is_digest_key(key) -> bool:
    """A key fit for keyed_digest: a string of at least DIGEST_KEY_MIN_LENGTH characters."""
    return isinstance(key, str) and len(key) >= DIGEST_KEY_MIN_LENGTH


def check_digest_key(key) -> None:
    if not is_digest_key(key):
        raise SealingError(f"the digest key must be a string of at least {DIGEST_KEY_MIN_LENGTH} characters "
                           "(a random, vaulted value)")


def is_dns_subdomain(value) -> bool:
    """An RFC 1123 subdomain: what Kubernetes accepts as a Secret's name."""
    return isinstance(value, str) and _DNS_SUBDOMAIN.fullmatch(value) is not None


def keyed_digest(key: str, purpose: str, document) -> str:
    """``hmac-sha256:<hex>`` of ``document`` (anything JSON can hold) for ``purpose``, keyed with ``key``.

    The key must be a secret of its own (random, at least DIGEST_KEY_MIN_LENGTH characters, kept out of
    the files the digest is written to): then the digest can be recomputed to tell an unchanged input,
    but not checked against guesses by someone who has only the digest."""
    check_digest_key(key)
    message = json.dumps({"purpose": purpose, "document": document}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode()
    return DIGEST_PREFIX + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def digest(spec: dict, key_fingerprint: str, key: str) -> str:
    """The keyed digest of a Secret's inputs (values included) and of the controller key they are sealed for."""
    return keyed_digest(key, "sealed-secret/v2", {"certificate": key_fingerprint, **spec})


def digest_matches(recorded: str | None, spec: dict, key_fingerprint: str, key: str) -> bool:
    if not isinstance(recorded, str) or not recorded.startswith(DIGEST_PREFIX):
        return False  # none, or an older kind of digest: seal again
    return hmac.compare_digest(recorded, digest(spec, key_fingerprint, key))


def seal(public_key, spec: dict, digest_key: str) -> dict:
    """The SealedSecret for ``spec`` (name, namespace, scope, type, data, labels, annotations). The labels
    go on both the SealedSecret and the Secret, so both can be found by them; the digest of the inputs,
    keyed with ``digest_key``, goes in an annotation."""
    name, namespace, scope = spec["name"], spec["namespace"], spec["scope"]
    validate(name, namespace, spec["data"], scope)
    label = label_for(scope, namespace, name)
    scope_annotations = {SCOPE_ANNOTATIONS[scope]: "true"} if scope in SCOPE_ANNOTATIONS else {}
    template_md = {"name": name, "namespace": namespace}
    if spec.get("labels"):
        template_md["labels"] = dict(spec["labels"])
    if spec.get("annotations") or scope_annotations:
        template_md["annotations"] = {**(spec.get("annotations") or {}), **scope_annotations}
    encrypted = {key: base64.b64encode(hybrid_encrypt(public_key, str(value).encode(), label)).decode()
                 for key, value in sorted(spec["data"].items())}
    metadata = {"name": name, "namespace": namespace}
    if spec.get("labels"):
        metadata["labels"] = dict(spec["labels"])
    recorded = digest(spec, fingerprint(public_key), digest_key)
    metadata["annotations"] = {**scope_annotations, DIGEST_ANNOTATION: recorded}
    return {
        "apiVersion": API_VERSION,
        "kind": "SealedSecret",
        "metadata": metadata,
        "spec": {"encryptedData": encrypted,
                 "template": {"metadata": template_md, "type": spec.get("type") or "Opaque"}},
    }


def recorded_digest(document: dict | None) -> str | None:
    return (((document or {}).get("metadata") or {}).get("annotations") or {}).get(DIGEST_ANNOTATION)


def fetch_certificate(auth: dict, controller_name: str, controller_namespace: str, timeout: float) -> bytes:
    """The controller's current certificate, from its ``/v1/cert.pem`` through the API server's service
    proxy: what ``kubeseal --fetch-cert`` does. Needs only ``get`` on ``services/proxy``.

    ``auth``: kubernetes.core's connection options (its k8s_auth_options, None when unset); the client
    is kubernetes.core's, so the unset ones come from the K8S_AUTH_* environment variables, then the
    in-cluster configuration, then the default kubeconfig, as for its modules."""
    try:
        from kubernetes import client
    except ImportError as e:
        raise SealingError(f"the Python package 'kubernetes' is needed to fetch the certificate ({e})") from None
    # Under an in-process runner (Mitogen's), the kubernetes package stays imported from one task to
    # the next, and with it the default configuration an earlier task's kubeconfig set, whose client
    # certificate would then authenticate a connection given only host and api_key: start afresh.
    client.Configuration.set_default(None)
    try:
        api = get_api_client(**auth).client.client
    except Exception as e:  # a bad kubeconfig, context or certificate file, an unreachable server: one line
        raise SealingError("cannot connect to the Kubernetes API to fetch the Sealed Secrets certificate: "
                           f"{' '.join(str(e).split())}") from None
    path = f"/api/v1/namespaces/{controller_namespace}/services/http:{controller_name}:/proxy/v1/cert.pem"
    try:
        response = api.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False,
                                _request_timeout=timeout, _return_http_data_only=True)
        pem = response.data
    except client.ApiException as e:
        reason = (e.body or b"").decode(errors="replace").strip() if isinstance(e.body, bytes) else (e.body or e.reason)
        raise SealingError(
            f"cannot fetch the Sealed Secrets certificate from service {controller_namespace}/{controller_name} "
            f"(HTTP {e.status}: {str(reason)[:200]}); is the controller installed and running? "
            "Or give the certificate as a file") from None
    except Exception as e:  # connection refused, DNS, TLS: one line, not a traceback
        raise SealingError("cannot reach the Kubernetes API to fetch the Sealed Secrets certificate: "
                           f"{' '.join(str(e).split())}") from None
    if b"BEGIN CERTIFICATE" not in pem:
        raise SealingError(f"service {controller_namespace}/{controller_name} answered something that is not a "
                           "PEM certificate at /v1/cert.pem")
    return pem


def to_yaml(document: dict) -> str:
    """Stable YAML: the same SealedSecret always renders to the same bytes."""
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1_000_000)
