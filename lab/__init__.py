"""The dbos.deploy lab: local stand-ins for AWS, Kubernetes and PostgreSQL.

This is test equipment. It lets the collection's roles and modules run, unchanged, on a machine with
no cloud account, no container engine and no cluster:

* AWS: moto in server mode (EC2, IAM, EKS, RDS, ECR, STS) with two fidelity fixes (``lab.aws``);
* Kubernetes: an API emulator built on kmock, plus a status stand-in that plays the controllers
  (``lab.kube``);
* PostgreSQL 16: a real server from the ``pgserver`` wheel (``lab.postgres``).

Nothing in the collection knows about the lab: the lab inventory only points the roles at these
endpoints. ``python -m lab up|status|down`` manages one lab; ``lab.pytest_plugin`` gives tests one.
"""
