# Copyright: dbos.deploy contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Docker credentials for ECR, as ``aws ecr get-login-password`` gives them (boto3, no aws CLI).

Reads the AWS connection as JSON on standard input ({"region", "endpoint_url", "access_key",
"secret_key"}; unset keys use the usual boto3 chain), so no credential appears in an argument or an
environment; prints {"registry", "username", "password"} as JSON.
"""

from __future__ import annotations

import base64
import json
import sys


def main() -> None:
    import boto3

    conn = {k: v for k, v in json.load(sys.stdin).items() if v}
    ecr = boto3.client("ecr", region_name=conn.get("region"), endpoint_url=conn.get("endpoint_url"),
                       aws_access_key_id=conn.get("access_key"), aws_secret_access_key=conn.get("secret_key"))
    [data] = ecr.get_authorization_token()["authorizationData"]
    username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    json.dump({"registry": data["proxyEndpoint"], "username": username, "password": password}, sys.stdout)


if __name__ == "__main__":
    main()
