"""The admission webhook's routes: one path of the same server per kind of change it judges.

The webhook serves these paths; the ValidatingWebhookConfiguration the local environment
installs and the one the Helm chart renders send each kind of change to its path, and a test
holds the three together.

- ``deployments.slogate.dev``: rollouts of gated Deployments (the gate itself);
- ``servicelevelobjectives.slogate.dev``: changes to SLOs a blocking gate reads (weakening,
  relabelling, deleting or re-creating one needs the ``override`` verb while the gate blocks);
- ``replicasets.slogate.dev``: ReplicaSets of gated Deployments made by anyone but the
  Deployment controller (a hand-made one would pass as a rollback target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The cluster's own controllers, as the API server names them: with
# --use-service-account-credentials (kubeadm, most managed clusters) each has a service account;
# without it, all act as system:kube-controller-manager. The Deployment controller makes
# ReplicaSets, the namespace controller and the garbage collector delete and orphan objects.
# Their changes to ReplicaSets and SLOs are never judged: the API server does not even send them
# (matchConditions), so a webhook that is down cannot stall them under failurePolicy: Fail.
CLUSTER_CONTROLLERS = (
    "system:serviceaccount:kube-system:deployment-controller",
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:kube-controller-manager",
)


@dataclass(frozen=True)
class WebhookRoute:
    name: str
    path: str
    group: str
    version: str
    resource: str
    operations: tuple[str, ...]
    skips_cluster_controllers: bool = False

    def rule(self) -> dict[str, Any]:
        return {
            "apiGroups": [self.group],
            "apiVersions": [self.version],
            "operations": list(self.operations),
            "resources": [self.resource],
            "scope": "Namespaced",
        }


DEPLOYMENTS = WebhookRoute(
    "deployments.slogate.dev", "/validate-deployments", "apps", "v1", "deployments",
    ("CREATE", "UPDATE"),
)  # fmt: skip
SLOS = WebhookRoute(
    "servicelevelobjectives.slogate.dev", "/validate-servicelevelobjectives", "slogate.dev",
    "v1alpha1", "servicelevelobjectives", ("CREATE", "UPDATE", "DELETE"), True,
)  # fmt: skip
REPLICASETS = WebhookRoute(
    "replicasets.slogate.dev", "/validate-replicasets", "apps", "v1", "replicasets",
    ("CREATE", "UPDATE"), True,
)  # fmt: skip
ROUTES = (DEPLOYMENTS, SLOS, REPLICASETS)
