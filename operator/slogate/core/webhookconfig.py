"""The ValidatingWebhookConfiguration slogate needs (the local environment installs this one;
the Helm chart renders the same fields, and a test holds the two together)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

WEBHOOK_NAME = "deployments.slogate.dev"
CONFIG_NAME = "slogate"
WEBHOOK_PATH = "/validate-deployments"
ALWAYS_EXCLUDED = ("kube-system",)


def validating_webhook_configuration(
    client_config: dict[str, Any],
    *,
    operator_namespace: str,
    failure_policy: Literal["Ignore", "Fail"] = "Ignore",
    timeout_seconds: int = 3,
    excluded_namespaces: Sequence[str] = (),
) -> dict[str, Any]:
    """``client_config`` is ``{"url": ..., "caBundle": ...}`` or ``{"service": ...}``."""
    if not 1 <= timeout_seconds <= 3:
        raise ValueError("timeoutSeconds must be 1..3: a slow gate must not stall rollouts")
    excluded = sorted({*ALWAYS_EXCLUDED, operator_namespace, *excluded_namespaces})
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIG_NAME, "labels": {"app.kubernetes.io/part-of": "slogate"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client_config,
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                        "scope": "Namespaced",
                    }
                ],
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
        ],
    }
