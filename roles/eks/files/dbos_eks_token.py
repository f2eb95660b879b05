# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""EKS bearer token for kubectl and the Kubernetes clients, as ``aws eks get-token`` makes it.

A kubeconfig ``exec`` credential plugin: prints an ExecCredential whose token is
``k8s-aws-v1.`` + base64url(presigned STS GetCallerIdentity URL), signed with the caller's AWS
credentials (the usual boto3 chain: environment, profile, instance role) and bound to the cluster
by the signed header ``x-k8s-aws-id``. Needs boto3; no aws CLI.

Usage: dbos-eks-token --cluster NAME --region REGION [--profile PROFILE] [--role-arn ARN]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys

TOKEN_PREFIX = "k8s-aws-v1."
# The EKS authenticator accepts a presigned URL for 15 minutes; the URL itself says 60 seconds, as
# aws-iam-authenticator does, and clients ask for a new token before the expiry stated below.
URL_EXPIRES_SECONDS = 60
TOKEN_LIFETIME = datetime.timedelta(minutes=14)


def presigned_url(cluster: str, region: str, profile: str | None = None, role_arn: str | None = None) -> str:
    import boto3

    session = boto3.session.Session(profile_name=profile, region_name=region)
    if role_arn:
        creds = session.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="dbos-eks-token")["Credentials"]
        session = boto3.session.Session(aws_access_key_id=creds["AccessKeyId"],
                                        aws_secret_access_key=creds["SecretAccessKey"],
                                        aws_session_token=creds["SessionToken"], region_name=region)
    # Always the regional STS endpoint of AWS itself, whatever endpoint overrides are set: the URL is
    # replayed by the cluster's authenticator, not by us.
    sts = session.client("sts", region_name=region, endpoint_url=f"https://sts.{region}.amazonaws.com")

    def add_cluster_header(request, **_kwargs):
        request.headers["x-k8s-aws-id"] = cluster

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    return sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=URL_EXPIRES_SECONDS,
                                      HttpMethod="GET")


def token(url: str) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def exec_credential(tok: str, now: datetime.datetime | None = None) -> dict:
    now = now or datetime.datetime.now(datetime.UTC)
    return {
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": {"expirationTimestamp": (now + TOKEN_LIFETIME).strftime("%Y-%m-%dT%H:%M:%SZ"), "token": tok},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print an ExecCredential with an EKS bearer token.")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--role-arn")
    args = parser.parse_args(argv)
    try:
        url = presigned_url(args.cluster, args.region, args.profile, args.role_arn)
    except Exception as exc:  # a credential plugin reports the failure; it does not trace back
        print(f"dbos-eks-token: cannot sign for cluster {args.cluster}: {exc}", file=sys.stderr)
        return 1
    json.dump(exec_credential(token(url)), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
