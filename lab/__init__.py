"""The dbos.deploy lab: AWS, Kubernetes and PostgreSQL on this machine, on 127.0.0.1.

This is test equipment. It lets the collection's roles and modules run, unchanged, on a machine with
no cloud account, no container engine and no cluster:

* AWS: moto in server mode (EC2, IAM, EKS, RDS, ECR, STS) with two fidelity fixes (``lab.aws``);
* Kubernetes: a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
  started by kwokctl, with kwok faking the nodes and the pods' life cycle, and the real Sealed
  Secrets and KEDA controllers run as processes in their pods' place (``lab.kube``); every binary
  built from its Go module by ``make lab-build`` (``lab.build``, versions in ``lab.components``);
* PostgreSQL 16: a real server from the ``pgserver`` wheel (``lab.postgres``).

Nothing in the collection knows about the lab: the lab inventory only points the roles at these
endpoints. ``python -m lab up|status|down`` manages one lab; ``lab.pytest_plugin`` gives tests one.
"""
