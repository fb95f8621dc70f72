"""Kubernetes objects the demo, tests and benchmarks create, written once."""

from __future__ import annotations

from typing import Any

from slogate.core.resources import API_VERSION


def deployment(
    name: str,
    namespace: str,
    app: str | None = None,
    image: str = "shop/app:1.0",
    container: str = "main",
    replicas: int = 1,
) -> dict[str, Any]:
    """A Deployment labelled ``app`` (default: its name), one container."""
    app = app or name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": container, "image": image}]},
            },
        },
    }


def release_gate(
    name: str, namespace: str, app: str, objectives: list[str], **spec: Any
) -> dict[str, Any]:
    """A ReleaseGate for Deployments labelled ``app`` on the named SLOs."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ReleaseGate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "objectives": [{"name": o} for o in objectives],
            **spec,
        },
    }


def ratio_slo(
    name: str, namespace: str, errors: str, total: str, target: float = 99.9, **spec: Any
) -> dict[str, Any]:
    """A ServiceLevelObjective on an errors/total counter pair."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceLevelObjective",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "service": name,
            "target": target,
            "indicator": {"ratio": {"errors": errors, "total": total}},
            **spec,
        },
    }
