"""Unit tests for roles/eks/files/dbos_eks_token.py, the kubeconfig's token helper.

Its signatures are checked against botocore's (the reference the AWS CLI's ``aws eks get-token``
uses) on the same inputs; its credential sources against real files, a real credential_process and
local HTTP servers answering as the container credential endpoint and the EC2 instance metadata
service do. STS calls (roles to assume) are tested on the lab, in tests/roles/test_eks.py."""

from __future__ import annotations

import datetime
import http.server
import importlib.util
import json
import shlex
import sys
import threading
import urllib.parse
from email.message import Message
from pathlib import Path
from typing import ClassVar

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.session import Session

HELPER = Path(__file__).resolve().parents[4] / "roles" / "eks" / "files" / "dbos_eks_token.py"
_spec = importlib.util.spec_from_file_location("dbos_eks_token", HELPER)
tok = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tok)

KEY, SECRET = "AKIAUNITUNITUNITUNIT", "unit/secret+key=with/characters+to/escape"
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
           "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_STS", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
           "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
           "AWS_EC2_METADATA_SERVICE_ENDPOINT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No credentials but the test's own: no environment keys, empty shared files, no metadata service."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def at(timestamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize("session_token", [None, "session/token+with=escapes"])
def test_the_presigned_url_is_botocores_to_the_byte(session_token):
    sts = Session().create_client("sts", region_name="eu-central-1", aws_access_key_id=KEY,
                                  aws_secret_access_key=SECRET, aws_session_token=session_token,
                                  endpoint_url="https://sts.eu-central-1.amazonaws.com")
    sts.meta.events.register("before-sign.sts.GetCallerIdentity",
                             lambda request, **_: request.headers.__setitem__("x-k8s-aws-id", "dbos-prod"))
    reference = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    signed_at = urllib.parse.parse_qs(urllib.parse.urlsplit(reference).query)["X-Amz-Date"][0]
    ours = tok.presigned_url(tok.Credentials(KEY, SECRET, session_token), "dbos-prod", "eu-central-1", at(signed_at))
    assert ours == reference


@pytest.mark.parametrize("session_token", [None, "session/token"])
def test_sts_calls_are_signed_as_botocore_signs_them(monkeypatch, session_token):
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:4566")
    params = {"Action": "AssumeRole", "RoleArn": "arn:aws:iam::123456789012:role/deployer", "RoleSessionName": "s"}
    body = urllib.parse.urlencode({**params, "Version": "2011-06-15"}).encode()
    reference = AWSRequest(method="POST", url="http://127.0.0.1:4566/", data=body,
                           headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    SigV4Auth(BotoCredentials(KEY, SECRET, session_token), "sts", "us-west-2").add_auth(reference)
    ours = tok.sts_request("us-west-2", params, tok.Credentials(KEY, SECRET, session_token),
                           at(reference.headers["X-Amz-Date"]))
    assert (ours.full_url, ours.data) == ("http://127.0.0.1:4566/", body)
    assert ours.get_header("Authorization") == reference.headers["Authorization"]


def test_the_token_and_the_exec_credential():
    url = "https://sts.us-west-2.amazonaws.com/?Action=GetCallerIdentity"
    credential = tok.exec_credential(tok.token(url), now=at("20250101T000000Z"))
    assert credential["status"]["expirationTimestamp"] == "2025-01-01T00:14:00Z"
    encoded = credential["status"]["token"].removeprefix("k8s-aws-v1.")
    assert "=" not in encoded
    assert tok.base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode() == url


def test_environment_keys_come_first_unless_a_profile_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "t")
    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n"
                                          "[ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = o\n")
    assert tok.find_credentials("us-west-2") == (KEY, SECRET, "t")
    monkeypatch.setenv("AWS_PROFILE", "ops")  # AWS_PROFILE does not outrank the environment's keys
    assert tok.find_credentials("us-west-2") == (KEY, SECRET, "t")
    assert tok.find_credentials("us-west-2", profile="ops") == ("AKIAOPS", "o", None)


def test_profiles_from_both_shared_files(monkeypatch, tmp_path):
    (tmp_path / "config").write_text("[default]\nregion = us-west-2\naws_access_key_id = AKIACONFIG\n"
                                     "aws_secret_access_key = c\n[profile ci]\naws_access_key_id = AKIACI\n"
                                     "aws_secret_access_key = ci\naws_session_token = cit\n")
    (tmp_path / "credentials").write_text("[ci]\naws_secret_access_key = from-credentials\n")
    assert tok.find_credentials("us-west-2") == ("AKIACONFIG", "c", None)
    monkeypatch.setenv("AWS_PROFILE", "ci")
    # the credentials file's settings over the config file's, as the SDKs merge them
    assert tok.find_credentials("us-west-2") == ("AKIACI", "from-credentials", "cit")


def test_a_credential_process(tmp_path):
    script = tmp_path / "creds.py"
    script.write_text('import json\nprint(json.dumps({"Version": 1, "AccessKeyId": "AKIAPROC", '
                      '"SecretAccessKey": "p", "SessionToken": "pt"}))\n')
    command = shlex.join([sys.executable, str(script)])
    (tmp_path / "config").write_text(f"[profile proc]\ncredential_process = {command}\n")
    assert tok.find_credentials("us-west-2", profile="proc") == ("AKIAPROC", "p", "pt")

    failing = shlex.join([sys.executable, "-c", "x"])
    (tmp_path / "config").write_text(f"[profile proc]\ncredential_process = {failing}\n")
    with pytest.raises(tok.CredentialError, match="credential_process"):
        tok.find_credentials("us-west-2", profile="proc")


def test_a_named_profile_that_is_nowhere_is_an_error(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "nowhere")
    with pytest.raises(tok.CredentialError, match="profile nowhere is in neither"):
        tok.find_credentials("us-west-2")


def test_no_credentials_at_all_says_where_it_looked():
    with pytest.raises(tok.CredentialError, match="no AWS credentials found"):
        tok.find_credentials("us-west-2")


class Endpoint(http.server.BaseHTTPRequestHandler):
    """Answers as the container credential endpoint and IMDSv2 do; records the requests."""

    seen: ClassVar[list[tuple[str, str, Message]]]
    credentials: ClassVar[dict] = {"Code": "Success", "AccessKeyId": "AKIAFROMHTTP", "SecretAccessKey": "h",
                                   "Token": "ht"}

    def reply(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_PUT(self):
        self.seen.append(("PUT", self.path, self.headers))
        self.reply(200, "imds-session")

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers))
        if self.path == "/latest/meta-data/iam/security-credentials/":
            self.reply(200, "node-role\n")
        else:
            self.reply(200, json.dumps(self.credentials))

    def log_message(self, *_args):
        pass


@pytest.fixture
def endpoint():
    Endpoint.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Endpoint.seen
    server.shutdown()


def test_container_credentials_with_their_authorization_token(monkeypatch, tmp_path, endpoint):
    url, seen = endpoint
    (tmp_path / "token").write_text("pod-identity-token\n")
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url + "/v1/credentials")
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(tmp_path / "token"))
    assert tok.find_credentials("us-west-2") == ("AKIAFROMHTTP", "h", "ht")
    [(method, path, headers)] = seen
    assert (method, path, headers["Authorization"]) == ("GET", "/v1/credentials", "pod-identity-token")


def test_container_credentials_only_from_the_allowed_addresses(monkeypatch):
    monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://203.0.113.7/creds")
    with pytest.raises(tok.CredentialError, match="only https"):
        tok.find_credentials("us-west-2")


def test_the_instance_role_through_imdsv2(monkeypatch, endpoint):
    url, seen = endpoint
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url + "/")
    assert tok.find_credentials("us-west-2") == ("AKIAFROMHTTP", "h", "ht")
    assert [request[:2] for request in seen] == [
        ("PUT", "/latest/api/token"), ("GET", "/latest/meta-data/iam/security-credentials/"),
        ("GET", "/latest/meta-data/iam/security-credentials/node-role")]
    assert seen[0][2]["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert all(request[2]["X-aws-ec2-metadata-token"] == "imds-session" for request in seen[1:])


def test_a_profile_role_needs_a_source(tmp_path):
    (tmp_path / "config").write_text("[profile deploy]\nrole_arn = arn:aws:iam::123456789012:role/deployer\n")
    with pytest.raises(tok.CredentialError, match="no source_profile or credential_source"):
        tok.find_credentials("us-west-2", profile="deploy")
