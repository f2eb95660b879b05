#!/usr/bin/python
# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sealed_secret
short_description: Seal a Kubernetes Secret for the Sealed Secrets controller into a file meant for Git
version_added: 0.1.0
description:
  - Encrypts each value of a Secret with the public key of a Sealed Secrets controller
    (bitnami-labs/sealed-secrets), in the controller's own format, and writes the resulting
    C(SealedSecret) as YAML to O(path). Only the controller, holding the private key, can turn it
    back into the Secret. The file is safe to commit; applying it is a separate step
    (for example M(kubernetes.core.k8s) with O(kubernetes.core.k8s#module:src)).
  - The same as C(kubeseal --format yaml), in Python, with no C(kubeseal) binary needed.
  - "Idempotent: the SealedSecret records an HMAC-SHA256 of its inputs (values, names, scope and the
    controller key), keyed with O(digest_key), in the annotation C(dbos.dev/plaintext-hmac). When the
    inputs have not changed, the file is left byte for byte as it is and C(changed) is false. The key
    is not in the file, so whoever holds the file cannot test guesses of a value against the digest;
    the plaintext is never written anywhere."
  - A file whose digest was made with another key, or by an earlier version of this module, is sealed
    again once.
  - "Scopes, as kubeseal's C(--scope): C(strict) (the default) binds each value to this namespace and
    name; C(namespace-wide) to the namespace (the Secret may be renamed); C(cluster-wide) lets it be
    unsealed anywhere."
  - The controller certificate comes from O(certificate), O(certificate_path) (offline sealing, like
    C(kubeseal --cert)), or else from the running controller through the Kubernetes API's service
    proxy (like C(kubeseal --fetch-cert)). The API is reached with C(kubernetes.core)'s connection
    options (O(kubeconfig), O(context), O(host), O(api_key), O(validate_certs), ...) and their
    C(K8S_AUTH_*) environment variables, as by M(kubernetes.core.k8s_info); offline sealing needs none.
  - A new controller key (the controller renews its key every 30 days by default, or a new cluster)
    changes the certificate, and the next run re-seals.
author:
  - dbos.deploy maintainers (!UNKNOWN)
requirements:
  - cryptography
  - kubernetes (only to fetch the certificate from the cluster)
options:
  name:
    description: Name of the Secret (and of the SealedSecret).
    type: str
    required: true
  namespace:
    description: Namespace of the Secret.
    type: str
    required: true
  data:
    description: The Secret's keys and plaintext values. Never logged.
    type: dict
    required: true
  type:
    description: Type of the Secret the controller creates.
    type: str
    default: Opaque
  labels:
    description: Labels of the SealedSecret and of the Secret the controller creates.
    type: dict
    default: {}
  annotations:
    description: Annotations of the Secret the controller creates.
    type: dict
    default: {}
  scope:
    description: Where the sealed values may be unsealed (see above).
    type: str
    choices: [strict, namespace-wide, cluster-wide]
    default: strict
  path:
    description:
      - File the SealedSecret is written to, with mode C(0644) (it holds no plaintext). Its directory
        must exist.
      - An existing file is read to decide whether anything changed.
    type: path
    required: true
  force:
    description: Re-seal even if nothing changed.
    type: bool
    default: false
  digest_key:
    description:
      - The key of the HMAC recorded in the SealedSecret, at least 32 characters. A random value kept
        in the vault, beside the passwords, and never in the sealed files' repository in clear text.
      - Changing it re-seals every Secret once.
    type: str
    required: true
  certificate:
    description: The controller's certificate (or RSA public key), PEM.
    type: str
  certificate_path:
    description: File holding the controller's certificate, as written by C(kubeseal --fetch-cert).
    type: path
  controller_name:
    description: Service name of the controller, to fetch its certificate (kubeseal's C(--controller-name)).
    type: str
    default: sealed-secrets
  controller_namespace:
    description: Namespace of the controller (kubeseal's C(--controller-namespace)).
    type: str
    default: kube-system
  timeout:
    description: Seconds to wait for the certificate.
    type: float
    default: 30
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
notes:
  - The Kubernetes connection options are used only to fetch the certificate from the cluster; with
    O(certificate) or O(certificate_path) nothing connects to the cluster.
  - Check mode seals in memory and returns the SealedSecret that would be written, without writing it.
  - Values are sealed as given (strings); binary values are not supported.
seealso:
  - name: Sealed Secrets
    description: The controller and kubeseal.
    link: https://github.com/bitnami-labs/sealed-secrets
"""

EXAMPLES = r"""
- name: Seal the application's database URL for the cluster's controller
  dbos.deploy.sealed_secret:
    name: dbos-app-db
    namespace: dbos
    data:
      database-url: "{{ app_database_url }}"
    path: "{{ playbook_dir }}/sealed/dbos-app-db.yaml"
    digest_key: "{{ vaulted_digest_key }}"
    kubeconfig: ~/.kube/config
    context: production
  no_log: true
  register: sealed

- name: Apply it
  kubernetes.core.k8s:
    src: "{{ sealed.path }}"

- name: Seal from inside a pod, with its ServiceAccount token (K8S_AUTH_* variables work as well)
  dbos.deploy.sealed_secret:
    name: dbos-app-db
    namespace: dbos
    data:
      database-url: "{{ app_database_url }}"
    path: sealed/dbos-app-db.yaml
    digest_key: "{{ vaulted_digest_key }}"
    host: https://kubernetes.default.svc
    api_key: "{{ lookup('ansible.builtin.file', '/var/run/secrets/kubernetes.io/serviceaccount/token') }}"
    ca_cert: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
  no_log: true

- name: Seal offline, with a certificate saved earlier by `kubeseal --fetch-cert`
  dbos.deploy.sealed_secret:
    name: conductor-api-key
    namespace: dbos
    scope: namespace-wide
    data:
      api-key: "{{ conductor_api_key }}"
    path: sealed/conductor-api-key.yaml
    digest_key: "{{ vaulted_digest_key }}"
    certificate_path: sealed-secrets-cert.pem
  no_log: true
"""

RETURN = r"""
path:
  description: The SealedSecret file.
  returned: always
  type: str
  sample: /srv/gitops/sealed/dbos-app-db.yaml
sealed_secret:
  description: The SealedSecret (encrypted values only), as written or as kept.
  returned: success
  type: dict
  sample:
    apiVersion: bitnami.com/v1alpha1
    kind: SealedSecret
    metadata:
      name: dbos-app-db
      namespace: dbos
      annotations:
        dbos.dev/plaintext-hmac: hmac-sha256:5d0c...
    spec:
      encryptedData:
        database-url: AgB4...
      template:
        metadata: {name: dbos-app-db, namespace: dbos}
        type: Opaque
reason:
  description: Why it was (or was not) sealed again.
  returned: success
  type: str
  sample: the values or the certificate changed
certificate_fingerprint:
  description: SHA-256 of the controller's public key the values are sealed for.
  returned: success
  type: str
  sample: sha256:3f1a...
"""

import copy
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes
from ansible_collections.dbos.deploy.plugins.module_utils.sealed_secrets import (
    SealingError,
    check_digest_key,
    digest_matches,
    fetch_certificate,
    fingerprint,
    load_public_key,
    recorded_digest,
    seal,
    to_yaml,
    validate,
)
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC


def read_existing(module, path):
    """The SealedSecret in ``path``, or None when there is none (or it is not one)."""
    import yaml

    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        module.fail_json(msg=f"cannot read {path}: {e}", path=path)
    return document if isinstance(document, dict) and document.get("kind") == "SealedSecret" else None


def write(module, path, text):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        module.fail_json(msg=f"directory {directory} does not exist; create it first", path=path)
    fd, tmp = tempfile.mkstemp(prefix=".sealed-", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(to_bytes(text))
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


def certificate_pem(module):
    p = module.params
    if p["certificate"]:
        return to_bytes(p["certificate"])
    if p["certificate_path"]:
        try:
            with open(p["certificate_path"], "rb") as f:
                return f.read()
        except OSError as e:
            raise SealingError(f"cannot read certificate_path: {e}") from None
    auth = {name: p[name] for name in AUTH_ARG_SPEC}
    return fetch_certificate(auth, p["controller_name"], p["controller_namespace"], p["timeout"])


def main():
    argument_spec = copy.deepcopy(AUTH_ARG_SPEC)
    argument_spec.update(
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        data=dict(type="dict", required=True, no_log=True),
        type=dict(type="str", default="Opaque"),
        labels=dict(type="dict", default={}),
        annotations=dict(type="dict", default={}),
        scope=dict(type="str", choices=["strict", "namespace-wide", "cluster-wide"], default="strict"),
        path=dict(type="path", required=True),
        force=dict(type="bool", default=False),
        digest_key=dict(type="str", required=True, no_log=True),
        certificate=dict(type="str"),
        certificate_path=dict(type="path"),
        controller_name=dict(type="str", default="sealed-secrets"),
        controller_namespace=dict(type="str", default="kube-system"),
        timeout=dict(type="float", default=30),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[("certificate", "certificate_path")],
        supports_check_mode=True,
    )
    p = module.params
    spec = {
        "name": p["name"], "namespace": p["namespace"], "scope": p["scope"], "type": p["type"],
        "data": {str(k): "" if v is None else str(v) for k, v in p["data"].items()},
        "labels": {str(k): str(v) for k, v in p["labels"].items()},
        "annotations": {str(k): str(v) for k, v in p["annotations"].items()},
    }
    path = p["path"]
    try:
        validate(spec["name"], spec["namespace"], spec["data"], spec["scope"])
        check_digest_key(p["digest_key"])  # before the certificate is fetched
        public_key = load_public_key(certificate_pem(module))
        key_fingerprint = fingerprint(public_key)
        existing = read_existing(module, path)
        unchanged = existing is not None and not p["force"] and digest_matches(
            recorded_digest(existing), spec, key_fingerprint, p["digest_key"])
        if unchanged:
            module.exit_json(changed=False, path=path, sealed_secret=existing, certificate_fingerprint=key_fingerprint,
                             reason="unchanged: same values and certificate")
        document = seal(public_key, spec, p["digest_key"])
    except SealingError as e:
        module.fail_json(msg=str(e), path=path)
    if existing is None:
        reason = "no SealedSecret in the file yet"
    elif p["force"]:
        reason = "forced"
    else:
        reason = "the values, the Secret's metadata or the certificate changed"
    if not module.check_mode:
        write(module, path, to_yaml(document))
    module.exit_json(changed=True, path=path, sealed_secret=document, certificate_fingerprint=key_fingerprint,
                     reason=reason)


if __name__ == "__main__":
    main()
