"""What the CLI reads from a cluster for ``slogate check`` and ``slogate status``.

The verdicts come from the same pure functions the webhook uses, so ``slogate check`` in a CI
pipeline answers exactly what the API server would answer for a rollout right now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client as k8s
from pydantic import ValidationError

from slogate.core.admission import Change, GateRef, Review, gate_ref, review
from slogate.core.gate import DEFAULT_STALE_AFTER_S, SloView
from slogate.core.resources import GATE_KIND, GROUP, SLO_KIND, VERSION
from slogate.core.slo.message import format_burn

EXIT_ALLOW, EXIT_BLOCK, EXIT_WARN = 0, 1, 2


@dataclass(frozen=True)
class CheckResult:
    exit_code: int
    decision: str  # ALLOW | WARN | BLOCK
    lines: tuple[str, ...]


def _items(got: object) -> list[dict[str, Any]]:
    return list(cast(dict[str, Any], got).get("items", []))


def list_slos(api: k8s.ApiClient, namespace: str | None) -> list[dict[str, Any]]:
    custom = k8s.CustomObjectsApi(api)
    if namespace:
        return _items(
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, SLO_KIND.plural)
        )
    return _items(custom.list_cluster_custom_object(GROUP, VERSION, SLO_KIND.plural))


def _gates(api: k8s.ApiClient, namespace: str) -> list[GateRef]:
    custom = k8s.CustomObjectsApi(api)
    refs = []
    for item in _items(
        custom.list_namespaced_custom_object(GROUP, VERSION, namespace, GATE_KIND.plural)
    ):
        try:
            refs.append(gate_ref(item))
        except ValidationError:
            continue
    return refs


def _views(slos: list[dict[str, Any]]) -> dict[tuple[str, str], SloView]:
    return {
        (s["metadata"]["namespace"], s["metadata"]["name"]): SloView(
            s["metadata"]["namespace"],
            s["metadata"]["name"],
            dict(s["metadata"].get("labels") or {}),
            dict(s.get("status") or {}),
        )
        for s in slos
    }


def check(
    api: k8s.ApiClient,
    kind: str,
    name: str,
    namespace: str,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> CheckResult:
    """Would a rollout of ``deployment/name`` be admitted now? Or: a gate's own decision."""
    slos = _views(list_slos(api, namespace))
    now = time.time()
    if kind in ("releasegate", "releasegates", "gate", "gates"):
        gate = next((g for g in _gates(api, namespace) if g.name == name), None)
        if gate is None:
            return CheckResult(EXIT_WARN, "UNKNOWN", (f"no ReleaseGate {namespace}/{name}",))
        verdict = gate.judge(slos, now, stale_after_s)
        code = {"ALLOW": EXIT_ALLOW, "WARN": EXIT_WARN, "BLOCK": EXIT_BLOCK}[verdict.decision]
        return CheckResult(code, verdict.decision, verdict.reasons)
    if kind not in ("deployment", "deployments", "deploy"):
        raise ValueError(f"can check deployment/NAME or releasegate/NAME, not {kind}/{name}")
    dep = k8s.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    labels = dict((dep.metadata.labels if dep.metadata else None) or {})
    # A change of the pod template: exactly what a rollout sends to the API server.
    change = Change(
        "UPDATE",
        namespace,
        name,
        labels,
        {},
        {"revision": "current"},
        {"revision": "next"},
        user="slogate-check",
        dry_run=True,
    )
    result: Review = review(change, _gates(api, namespace), slos, now, stale_after_s)
    if result.outcome == "deny":
        return CheckResult(EXIT_BLOCK, "BLOCK", (result.message, *result.warnings))
    if result.outcome == "warn":
        return CheckResult(EXIT_WARN, "WARN", result.warnings)
    if not result.gated:
        return CheckResult(EXIT_ALLOW, "ALLOW", (f"no ReleaseGate matches deployment/{name}",))
    return CheckResult(EXIT_ALLOW, "ALLOW", ("every gating SLO is within its policy",))


COLUMNS = (
    "NAMESPACE",
    "NAME",
    "SERVICE",
    "TARGET",
    "SLI",
    "BUDGET",
    "BURN-1H",
    "BURN-6H",
    "RISK",
    "EXHAUSTS",
    "FIRING",
)


def status_rows(slos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in sorted(slos, key=lambda x: (x["metadata"]["namespace"], x["metadata"]["name"])):
        st = s.get("status") or {}
        summary = st.get("summary") or {}
        burns = st.get("burnRates") or {}
        rows.append(
            {
                "namespace": s["metadata"]["namespace"],
                "name": s["metadata"]["name"],
                "service": (s.get("spec") or {}).get("service"),
                "target": (s.get("spec") or {}).get("target"),
                "sli": st.get("sli"),
                "budgetRemaining": (st.get("errorBudget") or {}).get("remaining"),
                "burnRates": burns,
                "risk": st.get("risk"),
                "exhaustsIn": (st.get("forecast") or {}).get("exhaustsIn"),
                "firing": st.get("firing") or [],
                "message": st.get("message"),
                "_cells": (
                    s["metadata"]["namespace"],
                    s["metadata"]["name"],
                    str((s.get("spec") or {}).get("service") or "-"),
                    f"{(s.get('spec') or {}).get('target')}%",
                    summary.get("sli") or "-",
                    summary.get("budget") or "-",
                    summary.get("burn1h") or "-",
                    _burn(burns.get("6h")),
                    st.get("risk") or "-",
                    (st.get("forecast") or {}).get("exhaustsIn") or "-",
                    ",".join(st.get("firing") or []) or "-",
                ),
            }
        )
    return rows


def _burn(value: Any) -> str:
    return "-" if value is None else format_burn(float(value))


def render_table(rows: list[dict[str, Any]], color: bool = False) -> str:
    cells = [COLUMNS, *(r["_cells"] for r in rows)]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(COLUMNS))]
    colors = {"SAFE": "32", "OBSERVE": "36", "DANGER": "33", "FREEZE": "31", "UNKNOWN": "90"}
    lines = []
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            text = str(cell).ljust(widths[i])
            if color and COLUMNS[i] == "RISK" and cell in colors:
                text = f"\033[{colors[cell]}m{text}\033[0m"
            parts.append(text)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
