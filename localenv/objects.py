"""Kubernetes objects the demo, tests and benchmarks create, written once."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from slogate.core.resources import API_VERSION
from slogate.core.timetext import rfc3339


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


def replicaset(dep: dict[str, Any], image: str, hash_: str) -> dict[str, Any]:
    """The ReplicaSet the Deployment controller makes for ``dep`` (which needs its uid) with
    ``image`` in its first container: no controller-manager runs locally, so tests and
    benchmarks make the ReplicaSets of current and earlier revisions themselves."""
    template = json.loads(json.dumps(dep["spec"]["template"]))
    template["spec"]["containers"][0]["image"] = image
    template["metadata"]["labels"]["pod-template-hash"] = hash_
    name = dep["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-{hash_}",
            "namespace": dep["metadata"]["namespace"],
            "labels": {**template["metadata"]["labels"]},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": dep["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {**template["metadata"]["labels"]}},
            "template": template,
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


def fresh_slo_status(
    remaining: float,
    risk: str,
    burn: float = 1.0,
    firing: Sequence[str] = (),
    at: float | None = None,
) -> dict[str, Any]:
    """An SLO status as the controller writes it, evaluated ``at`` (default now): lets the
    webhook's tests and benchmarks set a budget without running the controller."""
    now = rfc3339(time.time() if at is None else at)

    def condition(type_: str, status: bool, reason: str) -> dict[str, str]:
        return {
            "type": type_,
            "status": str(status),
            "reason": reason,
            "message": "",
            "lastTransitionTime": now,
        }

    return {
        "observedGeneration": 1,
        "lastEvaluationTime": now,
        "sli": 0.999,
        "errorBudget": {"remaining": remaining, "consumed": 1 - remaining},
        "burnRates": {"5m": burn, "1h": burn},
        "firing": list(firing),
        "risk": risk,
        "conditions": [
            condition("Ready", True, "Evaluated"),
            condition("Stale", False, "Fresh"),
            condition("BudgetExhausted", remaining <= 0, "Evaluated"),
        ],
    }
