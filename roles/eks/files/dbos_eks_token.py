# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""EKS bearer token for kubectl and the Kubernetes clients, as ``aws eks get-token`` makes it.

A kubeconfig ``exec`` credential plugin: prints an ExecCredential whose token is
``k8s-aws-v1.`` + base64url(presigned STS GetCallerIdentity URL), signed (AWS Signature Version 4)
with the caller's AWS credentials and bound to the cluster by the signed header ``x-k8s-aws-id``.

Python 3.9 or later and its standard library only: no aws CLI, no boto3, so any ``python3`` runs it.
The credentials are looked for as the AWS SDKs do; the first found is used:

1. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (not with --profile);
2. the profile (--profile, else AWS_PROFILE, else ``default``) of the shared files (AWS_CONFIG_FILE,
   AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/config and ~/.aws/credentials): a role to assume
   (role_arn with source_profile or credential_source, or with web_identity_token_file), keys,
   or a credential_process;
3. a web identity from the environment: AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (IRSA);
4. the container's credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI (ECS, EKS Pod Identity);
5. the EC2 instance's role (IMDSv2; AWS_EC2_METADATA_DISABLED=true skips it).

A profile of IAM Identity Center (sso_*) needs botocore, which then only finds the credentials.
With --role-arn, the credentials found assume that role first. STS calls (assuming a role) go to
AWS_ENDPOINT_URL_STS or AWS_ENDPOINT_URL when set, else the region's STS endpoint; the token is
always a URL of the region's STS endpoint of AWS itself, which the cluster's authenticator replays.

Usage: dbos-eks-token --cluster NAME --region REGION [--profile PROFILE] [--role-arn ARN]
"""

from __future__ import annotations

import argparse
import base64
import configparser
import datetime
import hashlib
import hmac
import json
import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import NamedTuple

UTC = datetime.timezone.utc  # noqa: UP017 (datetime.UTC is Python 3.11's; the helper runs on 3.9)
TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_HEADER = "x-k8s-aws-id"
# The EKS authenticator accepts a presigned URL for 15 minutes; the URL itself says 60 seconds, as
# aws-iam-authenticator does, and clients ask for a new token before the expiry stated below.
URL_EXPIRES_SECONDS = 60
TOKEN_LIFETIME = datetime.timedelta(minutes=14)
STS_VERSION = "2011-06-15"
ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
HTTP_TIMEOUT = 10
METADATA_TIMEOUT = 1  # seconds, as the SDKs: off EC2 the instance metadata service does not answer
CONTAINER_HOSTS = ("127.0.0.1", "localhost", "::1", "169.254.170.2", "169.254.170.23", "fd00:ec2::23")


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


class CredentialError(Exception):
    """No usable credentials, or a source that failed; the message says which and why."""


# --- Signature Version 4 ----------------------------------------------------------------------------

def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="-_.~")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _scope(now: datetime.datetime, region: str, service: str) -> str:
    return f"{now:%Y%m%d}/{region}/{service}/aws4_request"


def signature(creds: Credentials, *, region: str, service: str, now: datetime.datetime, method: str,
              query: dict[str, str], headers: dict[str, str], payload_hash: str) -> tuple[str, str]:
    """(signed header names, signature) of a request, by the Signature Version 4 rules. ``headers``
    are the ones to sign, ``host`` among them."""
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    lowered = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    names = sorted(lowered)
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join([method, "/", canonical_query, canonical_headers, signed_headers, payload_hash])
    string_to_sign = "\n".join([ALGORITHM, f"{now:%Y%m%dT%H%M%SZ}", _scope(now, region, service),
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(("AWS4" + creds.secret_key).encode(), f"{now:%Y%m%d}")
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return signed_headers, hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def presigned_url(creds: Credentials, cluster: str, region: str, now: datetime.datetime | None = None) -> str:
    """The presigned GetCallerIdentity URL of the region's STS endpoint, bound to ``cluster``."""
    now = now or datetime.datetime.now(UTC)
    host = f"sts.{region}.amazonaws.com"
    query = {"Action": "GetCallerIdentity", "Version": STS_VERSION, "X-Amz-Algorithm": ALGORITHM,
             "X-Amz-Credential": f"{creds.access_key}/{_scope(now, region, 'sts')}",
             "X-Amz-Date": f"{now:%Y%m%dT%H%M%SZ}", "X-Amz-Expires": str(URL_EXPIRES_SECONDS),
             "X-Amz-SignedHeaders": f"host;{CLUSTER_HEADER}"}
    if creds.token:
        query["X-Amz-Security-Token"] = creds.token
    sig = signature(creds, region=region, service="sts", now=now, method="GET", query=query,
                    headers={"host": host, CLUSTER_HEADER: cluster}, payload_hash=EMPTY_SHA256)[1]
    # the operation's parameters, then the signature's, in the order the SDKs write them
    query["X-Amz-Signature"] = sig
    return f"https://{host}/?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query.items())


def token(url: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def exec_credential(tok: str, now: datetime.datetime | None = None) -> dict:
    now = now or datetime.datetime.now(UTC)
    return {
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": {"expirationTimestamp": (now + TOKEN_LIFETIME).strftime("%Y-%m-%dT%H:%M:%SZ"), "token": tok},
    }


# --- STS ---------------------------------------------------------------------------------------------

def sts_endpoint(region: str) -> str:
    return (os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL")
            or f"https://sts.{region}.amazonaws.com").rstrip("/")


def sts_request(region: str, params: dict[str, str], creds: Credentials | None = None,
                now: datetime.datetime | None = None) -> urllib.request.Request:
    """An STS API call (POST, form-encoded), signed with ``creds`` (unsigned without)."""
    endpoint = sts_endpoint(region)
    body = urllib.parse.urlencode({**params, "Version": STS_VERSION}).encode()
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    if creds is not None:
        now = now or datetime.datetime.now(UTC)
        headers["host"] = urllib.parse.urlsplit(endpoint).netloc
        headers["x-amz-date"] = f"{now:%Y%m%dT%H%M%SZ}"
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        signed, sig = signature(creds, region=region, service="sts", now=now, method="POST", query={},
                                headers=headers, payload_hash=hashlib.sha256(body).hexdigest())
        headers["authorization"] = (f"{ALGORITHM} Credential={creds.access_key}/{_scope(now, region, 'sts')}, "
                                    f"SignedHeaders={signed}, Signature={sig}")
        del headers["host"]  # urllib sends it, the same
    return urllib.request.Request(endpoint + "/", data=body, headers=headers, method="POST")


def sts_credentials(region: str, params: dict[str, str], creds: Credentials | None = None) -> Credentials:
    """The temporary credentials an STS call (AssumeRole, AssumeRoleWithWebIdentity) answers."""
    try:
        with urllib.request.urlopen(sts_request(region, params, creds), timeout=HTTP_TIMEOUT) as response:
            document = ET.fromstring(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        message = ET.fromstring(detail).findtext(".//{*}Message") if detail.startswith("<") else detail
        raise CredentialError(f"STS {params['Action']} of {params['RoleArn']}: HTTP {e.code} {message}") from None
    except (OSError, ET.ParseError) as e:
        raise CredentialError(f"STS {params['Action']} of {params['RoleArn']}: {e}") from None
    found = document.find(".//{*}Credentials")
    if found is None:
        raise CredentialError(f"STS {params['Action']} of {params['RoleArn']} answered no credentials")
    return Credentials(found.findtext("{*}AccessKeyId"), found.findtext("{*}SecretAccessKey"),
                       found.findtext("{*}SessionToken"))


def assume_role(creds: Credentials, role_arn: str, region: str, session_name: str = "dbos-eks-token",
                external_id: str | None = None) -> Credentials:
    params = {"Action": "AssumeRole", "RoleArn": role_arn, "RoleSessionName": session_name}
    if external_id:
        params["ExternalId"] = external_id
    return sts_credentials(region, params, creds)


def assume_role_with_web_identity(token_file: str, role_arn: str, region: str,
                                  session_name: str | None = None) -> Credentials:
    try:
        with open(os.path.expanduser(token_file), encoding="utf-8") as f:
            identity = f.read().strip()
    except OSError as e:
        raise CredentialError(f"cannot read the web identity token: {e}") from None
    return sts_credentials(region, {"Action": "AssumeRoleWithWebIdentity", "RoleArn": role_arn,
                                    "RoleSessionName": session_name or "dbos-eks-token",
                                    "WebIdentityToken": identity})


# --- where credentials come from ---------------------------------------------------------------------

def from_environment() -> Credentials | None:
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or os.environ.get("AWS_SECURITY_TOKEN"))
    return None


def _read_ini(path: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    try:
        parser.read(os.path.expanduser(path), encoding="utf-8")
    except configparser.Error as e:
        raise CredentialError(f"cannot parse {path}: {e}") from None
    return parser


def load_profile(name: str) -> dict[str, str] | None:
    """The settings of profile ``name``: the config file's, then the credentials file's over them;
    None when neither has it."""
    config = _read_ini(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    credentials = _read_ini(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    section = "default" if name == "default" and config.has_section("default") else f"profile {name}"
    found = None
    if config.has_section(section):
        found = dict(config.items(section))
    if credentials.has_section(name):
        found = {**(found or {}), **dict(credentials.items(name))}
    return found


def from_process(command: str) -> Credentials:
    try:
        out = subprocess.run(shlex.split(command), capture_output=True, text=True, check=True, timeout=60).stdout
        document = json.loads(out)
        return Credentials(document["AccessKeyId"], document["SecretAccessKey"], document.get("SessionToken"))
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
        raise CredentialError(f"credential_process {command!r} failed: {e}") from None


def from_sso(name: str) -> Credentials:
    try:
        import botocore.session
    except ImportError:
        raise CredentialError(f"profile {name} uses IAM Identity Center (sso_*), which needs the Python package "
                              "botocore for this interpreter; or use keys, a role or credential_process") from None
    found = botocore.session.Session(profile=name).get_credentials()
    if found is None:
        raise CredentialError(f"profile {name}: no IAM Identity Center credentials (run aws sso login)")
    frozen = found.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def from_source(source: str) -> Credentials | None:
    """A profile's credential_source."""
    if source == "Environment":
        return from_environment()
    if source == "EcsContainer":
        return from_container()
    if source == "Ec2InstanceMetadata":
        return from_instance_metadata()
    raise CredentialError(f"credential_source {source!r} is not one of Environment, EcsContainer, Ec2InstanceMetadata")


def from_profile_role(name: str, settings: dict[str, str], region: str, depth: int = 0) -> Credentials | None:
    """The role a profile assumes (role_arn), or None when it has none."""
    role = settings.get("role_arn")
    if not role:
        return None
    session_name = settings.get("role_session_name") or "dbos-eks-token"
    if settings.get("web_identity_token_file"):
        return assume_role_with_web_identity(settings["web_identity_token_file"], role, region, session_name)
    if settings.get("source_profile"):
        source_name = settings["source_profile"]
        if depth >= 5:
            raise CredentialError(f"profile {name}: the chain of source_profile is too long")
        # a profile may assume its role with its own keys
        source = static(settings) if source_name == name else from_profile(source_name, region, depth + 1)
    elif settings.get("credential_source"):
        source = from_source(settings["credential_source"])
    else:
        raise CredentialError(f"profile {name} has a role_arn but no source_profile or credential_source")
    if source is None:
        raise CredentialError(f"profile {name}: no credentials to assume {role} with")
    return assume_role(source, role, region, session_name, settings.get("external_id"))


def from_profile_keys(name: str, settings: dict[str, str]) -> Credentials | None:
    """A profile's own credentials: IAM Identity Center, keys or a credential_process."""
    if any(key.startswith("sso_") for key in settings):
        return from_sso(name)
    if static(settings):
        return static(settings)
    if settings.get("credential_process"):
        return from_process(settings["credential_process"])
    return None


def from_profile(name: str, region: str, depth: int = 0) -> Credentials | None:
    settings = load_profile(name)
    if settings is None:
        raise CredentialError(f"profile {name} is in neither the AWS config file nor the credentials file")
    return from_profile_role(name, settings, region, depth) or from_profile_keys(name, settings)


def static(settings: dict[str, str]) -> Credentials | None:
    if settings.get("aws_access_key_id") and settings.get("aws_secret_access_key"):
        return Credentials(settings["aws_access_key_id"], settings["aws_secret_access_key"],
                           settings.get("aws_session_token") or settings.get("aws_security_token"))
    return None


def _get_json(request: urllib.request.Request, timeout: float) -> dict:
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def from_container() -> Credentials | None:
    relative, full = (os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
                      os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
    if relative:
        url = "http://169.254.170.2" + relative
    elif full:
        parts = urllib.parse.urlsplit(full)
        if parts.scheme != "https" and parts.hostname not in CONTAINER_HOSTS:
            raise CredentialError(f"AWS_CONTAINER_CREDENTIALS_FULL_URI {full}: only https or the container "
                                  "credential addresses are allowed")
        url = full
    else:
        return None
    headers = {}
    token_file = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    if token_file:
        with open(token_file, encoding="utf-8") as f:
            headers["Authorization"] = f.read().strip()
    elif os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        headers["Authorization"] = os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    try:
        document = _get_json(urllib.request.Request(url, headers=headers), HTTP_TIMEOUT)
        return Credentials(document["AccessKeyId"], document["SecretAccessKey"], document.get("Token"))
    except (OSError, ValueError, KeyError) as e:
        raise CredentialError(f"container credentials from {url}: {e}") from None


def from_instance_metadata() -> Credentials | None:
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254").rstrip("/")
    timeout = float(os.environ.get("AWS_METADATA_SERVICE_TIMEOUT", METADATA_TIMEOUT))
    headers = {}
    try:
        request = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers["X-aws-ec2-metadata-token"] = response.read().decode()
    except urllib.error.HTTPError as e:
        if e.code not in (403, 404, 405):  # those mean IMDSv1 only: go on without a session token
            return None
    except OSError:
        return None  # not on EC2
    path = f"{base}/latest/meta-data/iam/security-credentials/"
    try:
        with urllib.request.urlopen(urllib.request.Request(path, headers=headers), timeout=timeout) as response:
            role = response.read().decode().split()[0]
        document = _get_json(urllib.request.Request(path + role, headers=headers), timeout)
        return Credentials(document["AccessKeyId"], document["SecretAccessKey"], document.get("Token"))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None  # an instance without a role
        raise CredentialError(f"instance metadata: HTTP {e.code}") from None
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise CredentialError(f"instance role credentials: {e}") from None


def find_credentials(region: str, profile: str | None = None) -> Credentials:
    """The first credentials found, in the SDKs' order (see the module's docstring)."""
    if not profile:  # an explicit profile wins over the environment's keys
        found = from_environment()
        if found:
            return found
    name = profile or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
    settings = load_profile(name or "default")
    if name and settings is None:
        raise CredentialError(f"profile {name} is in neither the AWS config file nor the credentials file")
    found = settings and from_profile_role(name or "default", settings, region)
    if found:
        return found
    if os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") and os.environ.get("AWS_ROLE_ARN"):
        return assume_role_with_web_identity(os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"], os.environ["AWS_ROLE_ARN"],
                                             region, os.environ.get("AWS_ROLE_SESSION_NAME"))
    found = settings and from_profile_keys(name or "default", settings)
    found = found or from_container() or from_instance_metadata()
    if found:
        return found
    raise CredentialError("no AWS credentials found (environment, profile, web identity, container, instance role)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print an ExecCredential with an EKS bearer token.")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--role-arn")
    args = parser.parse_args(argv)
    try:
        creds = find_credentials(args.region, args.profile)
        if args.role_arn:
            creds = assume_role(creds, args.role_arn, args.region)
    except CredentialError as exc:  # a credential plugin reports the failure in one line
        print(f"dbos-eks-token: cannot sign for cluster {args.cluster}: {exc}", file=sys.stderr)
        return 1
    json.dump(exec_credential(token(presigned_url(creds, args.cluster, args.region))), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
