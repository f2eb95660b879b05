"""A second implementation of what the Sealed Secrets controller does to open a SealedSecret, for the
unit tests of the collection's sealing code (plugins/module_utils/sealed_secrets.py): written from the
controller's source (bitnami-labs/sealed-secrets: pkg/crypto/crypto.go, pkg/controller/keys.go,
pkg/apis/sealedsecrets/v1alpha1), independently of the sealing module, so that one implementation is
checked against another without a cluster. The lab's real controller checks the same in
tests/lab/test_runner.py and tests/roles/test_secrets.py.
"""

from __future__ import annotations

import base64
import datetime
import struct

KEY_BITS = 4096
NAMESPACE_WIDE = "sealedsecrets.bitnami.com/namespace-wide"
CLUSTER_WIDE = "sealedsecrets.bitnami.com/cluster-wide"
GROUP, VERSION = "bitnami.com", "v1alpha1"


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
