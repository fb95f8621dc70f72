"""The ValidatingWebhookConfiguration slogate needs, as the local environment installs it (the
Helm chart renders the same fields, and a test holds the two together).

Three webhooks, one per route of the same server (``slogate.core.webhookroutes``): rollouts of
gated Deployments, changes to the SLOs a blocking gate reads, and ReplicaSets of gated
Deployments made by anyone but the Deployment controller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from slogate.core.webhookroutes import CLUSTER_CONTROLLERS, ROUTES

CONFIG_NAME = "slogate"
ALWAYS_EXCLUDED = ("kube-system",)


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
