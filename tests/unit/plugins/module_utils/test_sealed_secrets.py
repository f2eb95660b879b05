"""Unit tests for plugins/module_utils/sealed_secrets.py. Decryption goes through sealed_reference.py
beside this file, a separate implementation written from the controller's source (the real
controller opens the collection's SealedSecrets in tests/lab/test_runner.py and tests/roles)."""

import base64
import struct

import pytest
from ansible_collections.dbos.deploy.plugins.module_utils import sealed_secrets as ss

from tests.unit.plugins.module_utils.sealed_reference import (
    UnsealError,
    generate_key,
    hybrid_decrypt,
    load_private_key,
    unseal,
)


@pytest.fixture(scope="module")
def keypair():
    key_pem, cert_pem = generate_key(2048)  # 4096 in the lab; the format does not depend on it
    return load_private_key(key_pem), cert_pem


KEY = "a-vaulted-digest-key-of-32-chars!"


def spec(**overrides):
    base = {"name": "dbos-app-db", "namespace": "dbos", "scope": "strict", "type": "Opaque",
            "data": {"database-url": "postgresql://u:p%40ss@db:5432/dbos_app?sslmode=require"},
            "labels": {"app.kubernetes.io/part-of": "dbos"}, "annotations": {}}
    return {**base, **overrides}


@pytest.mark.parametrize(("scope", "label"), [
    ("strict", b"dbos/dbos-app-db"), ("namespace-wide", b"dbos"), ("cluster-wide", b"")])
def test_labels_follow_the_scope(scope, label):
    assert ss.label_for(scope, "dbos", "dbos-app-db") == label


def test_ciphertext_layout_is_the_controllers(keypair):
    private, cert = keypair
    blob = ss.hybrid_encrypt(ss.load_public_key(cert), b"value", b"dbos/x")
    (rsa_len,) = struct.unpack(">H", blob[:2])
    assert rsa_len == 256  # the RSA-2048 block, then AES-GCM: value + 16-byte tag
    assert len(blob) == 2 + rsa_len + len(b"value") + 16
    assert hybrid_decrypt([private], blob, b"dbos/x") == b"value"


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
def test_sealed_secret_unseals_into_the_secret(keypair, scope):
    private, cert = keypair
    document = ss.seal(ss.load_public_key(cert), spec(scope=scope), KEY)
    document["metadata"]["uid"] = "u-1"
    secret = unseal(document, [private])
    assert base64.b64decode(secret["data"]["database-url"]).decode() == spec()["data"]["database-url"]
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/part-of": "dbos"}
    annotations = document["metadata"]["annotations"]
    assert (ss.SCOPE_ANNOTATIONS.get(scope) in annotations) == (scope != "strict")


def test_strict_and_namespace_wide_values_do_not_open_elsewhere(keypair):
    private, cert = keypair
    key = ss.load_public_key(cert)
    for scope, wrong in (("strict", b"other/dbos-app-db"), ("strict", b"dbos/renamed"), ("namespace-wide", b"other")):
        blob = ss.hybrid_encrypt(key, b"v", ss.label_for(scope, "dbos", "dbos-app-db"))
        with pytest.raises(UnsealError):
            hybrid_decrypt([private], blob, wrong)


def test_digest_is_keyed_and_matches_only_the_same_inputs_and_key(keypair):
    cert = keypair[1]
    fp = ss.fingerprint(ss.load_public_key(cert))
    one = ss.digest(spec(), fp, KEY)
    assert one == ss.digest(spec(), fp, KEY) and ss.digest_matches(one, spec(), fp, KEY)
    assert not ss.digest_matches(one, spec(data={"database-url": "other"}), fp, KEY)
    assert not ss.digest_matches(one, spec(scope="namespace-wide"), fp, KEY)
    assert not ss.digest_matches(one, spec(), "sha256:another-key", KEY)
    assert not ss.digest_matches(one, spec(), fp, "another-vaulted-digest-key-32-chars")
    # none, or the unkeyed PBKDF2 digest of earlier versions: sealed again
    for broken in (None, "", "md5$1$a$b", "pbkdf2_sha256$600000$c2FsdA$ZGs", "hmac-sha256:00"):
        assert not ss.digest_matches(broken, spec(), fp, KEY)


def test_without_the_key_a_recorded_digest_confirms_no_guess(keypair):
    """What someone holding only the sealed file can do: recompute the digest for a guessed value with
    every key they might try. With the vaulted key unknown, even the right guess does not match."""
    cert = keypair[1]
    fp = ss.fingerprint(ss.load_public_key(cert))
    document = ss.seal(ss.load_public_key(cert), spec(), KEY)
    recorded = ss.recorded_digest(document)
    right_guess = spec()
    for guessed_key in ("", "x" * 32, fp.ljust(32, "0"), "dbos-app-db".ljust(32, "-"), "dbos".ljust(32, "/")):
        if len(guessed_key) >= ss.DIGEST_KEY_MIN_LENGTH:
            assert not ss.digest_matches(recorded, right_guess, fp, guessed_key)
    assert ss.digest_matches(recorded, right_guess, fp, KEY)
    assert "p%40ss" not in recorded and "postgresql" not in recorded


def test_a_short_digest_key_is_refused(keypair):
    with pytest.raises(ss.SealingError, match="at least 32 characters"):
        ss.seal(ss.load_public_key(keypair[1]), spec(), "short")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": "Bad_Name"}, "not a valid Secret name"),
    ({"namespace": "a/b"}, "not a valid namespace"),
    ({"data": {}}, "no data"),
    ({"data": {"bad key": "v"}}, "invalid data key"),
    ({"data": {"k": ""}}, "empty value"),
    ({"scope": "global"}, "scope must be one of"),
])
def test_bad_input_is_refused_with_what_to_fix(keypair, overrides, message):
    with pytest.raises(ss.SealingError, match=message):
        ss.seal(ss.load_public_key(keypair[1]), spec(**overrides), KEY)


def test_a_certificate_that_is_not_one_is_refused():
    with pytest.raises(ss.SealingError, match="not a PEM certificate"):
        ss.load_public_key(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_yaml_is_stable(keypair):
    document = ss.seal(ss.load_public_key(keypair[1]), spec(), KEY)
    assert ss.to_yaml(document) == ss.to_yaml(document)
    assert ss.to_yaml(document).startswith("apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\n")
