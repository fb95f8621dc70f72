"""The ValidatingWebhookConfiguration slogate needs (the local environment installs this one;
the Helm chart renders the same fields, and a test holds the two together).

Three webhooks, one per kind of change the webhook judges, each on its own path of the same
server:

- ``deployments.slogate.dev``: rollouts of gated Deployments (the gate itself);
- ``servicelevelobjectives.slogate.dev``: changes to SLOs a blocking gate reads (weakening,
  relabelling, deleting or re-creating one needs the ``override`` verb while the gate blocks);
- ``replicasets.slogate.dev``: ReplicaSets of gated Deployments made by anyone but the
  Deployment controller (a hand-made one would pass as a rollback target).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

CONFIG_NAME = "slogate"
ALWAYS_EXCLUDED = ("kube-system",)


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

# The Deployment webhook's name and path (the first slogate had only this one).
WEBHOOK_NAME = DEPLOYMENTS.name
WEBHOOK_PATH = DEPLOYMENTS.path


def validating_webhook_configuration(
    client_config: dict[str, Any],
    *,
    operator_namespace: str,
    failure_policy: Literal["Ignore", "Fail"] = "Ignore",
    timeout_seconds: int = 3,
    excluded_namespaces: Sequence[str] = (),
    cluster_controllers: Sequence[str] = CLUSTER_CONTROLLERS,
) -> dict[str, Any]:
    """``client_config`` is ``{"url": "https://host:port", "caBundle": ...}`` or
    ``{"service": {...}}``, without a path: each webhook adds its own."""
    if not 1 <= timeout_seconds <= 3:
        raise ValueError("timeoutSeconds must be 1..3: a slow gate must not stall rollouts")
    excluded = sorted({*ALWAYS_EXCLUDED, operator_namespace, *excluded_namespaces})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIG_NAME, "labels": {"app.kubernetes.io/part-of": "slogate"}},
        "webhooks": [
            {
                "name": route.name,
                **(
                    {"matchConditions": [not_from(cluster_controllers)]}
                    if route.skips_cluster_controllers
                    else {}
                ),
                "clientConfig": _with_path(client_config, route.path),
                "rules": [route.rule()],
                "admissionReviewVersions": ["v1"],
                # Events and gate status are written, but never for dry-run requests.
                "sideEffects": "NoneOnDryRun",
                "timeoutSeconds": timeout_seconds,
                "failurePolicy": failure_policy,
                "matchPolicy": "Equivalent",
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": excluded,
                        }
                    ]
                },
            }
            for route in ROUTES
        ],
    }


def not_from(users: Sequence[str]) -> dict[str, str]:
    """A matchCondition: the API server skips the webhook for requests by ``users``."""
    names = ", ".join(f"'{u}'" for u in users)
    return {
        "name": "not-a-cluster-controller",
        "expression": f"!(request.userInfo.username in [{names}])",
    }


def _with_path(client_config: dict[str, Any], path: str) -> dict[str, Any]:
    out = dict(client_config)
    if "url" in out:
        out["url"] = out["url"].rstrip("/") + path
    if "service" in out:
        out["service"] = {**out["service"], "path": path}
    return out
