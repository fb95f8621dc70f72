"""Gate decisions: a pure function of a ReleaseGate's spec and its SLOs' statuses.

The controller writes the decision into the gate's status; the webhook computes the same
decision from its own index at admission time (never from Prometheus), so a rollout is judged on
the SLO statuses as they are, not on a gate status that may lag a tick behind.

An objective is *unknown* when its SLO does not exist, has no status yet, reports no data
(risk UNKNOWN), is marked Stale, or its status is older than ``stale_after_s`` (the controller
stopped). Unknown objectives follow the gate's ``onUnknown``, with one exception: an objective
last seen blocking stays blocking ("sticky") until fresh data says otherwise. It was last seen
blocking when the numbers its SLO still shows (a failed evaluation keeps the last good ones)
trigger ``blockWhen``, or when the gate's own status remembers it so (for an SLO deleted or
relabelled out of ``objectiveSelector``). Otherwise breaking, deleting or relabelling an SLO
would turn a BLOCK into onUnknown's default WARN, and the rollout through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from slogate.core.releasegate import Decision, GateSpec
from slogate.core.slo.message import format_burn, format_percent
from slogate.core.status import condition
from slogate.core.timetext import parse_rfc3339_or_none

RANK: dict[str, int] = {"ALLOW": 0, "WARN": 1, "BLOCK": 2}
DEFAULT_STALE_AFTER_S = 15 * 60.0  # three controller heartbeats


@dataclass(frozen=True)
class SloView:
    """What an index knows about one SLO."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ObjectiveVerdict:
    namespace: str
    name: str
    risk: str | None
    remaining: float | None
    triggers: frozenset[str]  # BudgetExhausted and the risk level
    unknown: str | None  # why the objective's state is unknown, or None
    numbers: str  # "error budget exhausted (-29%), burning 3.2x over 1h" (may be empty)
    blocking: bool = False  # triggers blockWhen, fresh or as last seen (sticky)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def detail(self) -> str:
        """The numbers and, when unknown, why: one clause for a reason line."""
        parts = [p for p in (self.numbers, self.unknown) if p]
        return ", ".join(parts) or (self.risk or "unknown")

    def as_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "risk": self.risk,
            "budgetRemaining": self.remaining,
            "stale": self.unknown is not None,
            "blocking": self.blocking,
        }


@dataclass(frozen=True)
class Remembered:
    """An objective a gate's status last showed blocking, with the numbers shown then."""

    risk: str | None
    remaining: float | None

    def numbers(self) -> str:
        parts = []
        if self.remaining is not None:
            parts.append(f"error budget {format_percent(self.remaining)}")
        if self.risk:
            parts.append(f"risk {self.risk}")
        return ", ".join(parts)


Key = tuple[str, str]


def remembered_blocking(
    gate_status: Mapping[str, Any] | None, generation: int | None
) -> dict[Key, Remembered]:
    """The objectives a gate's status shows blocking, if that status is of the gate's current
    spec: editing a gate (only the platform team may) starts its memory afresh."""
    status = gate_status or {}
    if not status or status.get("observedGeneration") != generation:
        return {}
    out: dict[Key, Remembered] = {}
    for o in status.get("objectives") or []:
        if isinstance(o, Mapping) and o.get("blocking") is True:
            remaining = o.get("budgetRemaining")
            out[(str(o.get("namespace")), str(o.get("name")))] = Remembered(
                o.get("risk"), float(remaining) if isinstance(remaining, int | float) else None
            )
    return out


@dataclass(frozen=True)
class GateVerdict:
    decision: Decision
    reasons: tuple[str, ...]
    objectives: tuple[ObjectiveVerdict, ...]


def _current_burn(status: Mapping[str, Any]) -> tuple[str, float] | None:
    burns = status.get("burnRates") or {}
    for window in ("1h", "5m", "30m", "2h", "6h", "1d", "3d"):
        value = burns.get(window)
        if value is not None:
            return window, float(value)
    return None


def judge_objective(
    view: SloView | None, namespace: str, name: str, now: float, stale_after_s: float
) -> ObjectiveVerdict:
    """The state of one gating SLO, as the gate policy reads it."""
    if view is None:
        return ObjectiveVerdict(namespace, name, None, None, frozenset(), "SLO not found", "")
    status = view.status or {}
    risk = status.get("risk")
    remaining = (status.get("errorBudget") or {}).get("remaining")
    unknown: str | None = None
    evaluated = parse_rfc3339_or_none(status.get("lastEvaluationTime"))
    stale = condition(status, "Stale")
    if not status:
        unknown = "no status yet"
    elif stale is not None and stale.get("status") == "True":
        unknown = f"data is stale ({stale.get('reason')})"
    elif evaluated is None or now - evaluated > stale_after_s:
        unknown = "status not updated recently (is the controller running?)"
    elif risk in (None, "UNKNOWN"):
        unknown = "no data"
    triggers = set()
    if (condition(status, "BudgetExhausted") or {}).get("status") == "True":
        triggers.add("BudgetExhausted")
    if risk:
        triggers.add(str(risk))
    parts = []
    if remaining is not None:
        parts.append(
            f"error budget exhausted ({format_percent(remaining)})"
            if remaining <= 0
            else f"{format_percent(remaining)} of error budget left"
        )
    burn = _current_burn(status)
    if burn is not None:
        parts.append(f"burning {format_burn(burn[1])} over {burn[0]}")
    if status.get("firing"):
        parts.append(f"{', '.join(status['firing'])} firing")
    return ObjectiveVerdict(
        namespace, name, risk, remaining, frozenset(triggers), unknown, ", ".join(parts)
    )


def gate_objectives(spec: GateSpec, gate_namespace: str, slos: Mapping[Key, SloView]) -> list[Key]:
    """The (namespace, name) of every SLO the gate reads."""
    if spec.objectives is not None:
        return [(gate_namespace, o.name) for o in spec.objectives]
    assert spec.objective_selector is not None
    return sorted(
        key
        for key, view in slos.items()
        if key[0] == gate_namespace and spec.objective_selector.matches(dict(view.labels))
    )


def judge_gate(
    spec: GateSpec,
    gate_namespace: str,
    slos: Mapping[Key, SloView],
    now: float,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    remembered: Mapping[Key, Remembered] | None = None,
) -> GateVerdict:
    """ALLOW, WARN or BLOCK with one reason per objective that caused it.

    ``remembered``: what the gate's status last showed blocking (:func:`remembered_blocking`).
    """
    memory = remembered or {}
    keys = gate_objectives(spec, gate_namespace, slos)
    verdicts = [judge_objective(slos.get(key), key[0], key[1], now, stale_after_s) for key in keys]
    for key in sorted(set(memory) - set(keys)):
        # No longer read (deleted, or relabelled out of objectiveSelector) while it blocked:
        # it keeps blocking until its own fresh data says otherwise.
        v = judge_objective(slos.get(key), key[0], key[1], now, stale_after_s)
        if v.unknown is not None or v.triggers & set(spec.policy.block_when):
            verdicts.append(v)
    decision: Decision = "ALLOW"
    reasons: list[str] = []
    if not verdicts:
        action = spec.policy.on_unknown.upper()
        decision = "ALLOW" if action == "ALLOW" else ("WARN" if action == "WARN" else "BLOCK")
        if decision != "ALLOW":
            reasons.append("no SLO matches objectiveSelector")
    judged: list[ObjectiveVerdict] = []
    for v in verdicts:
        this: Decision = "ALLOW"
        blocks = bool(v.triggers & set(spec.policy.block_when))
        last = memory.get(v.key)
        reason = f"{v.name}: {v.detail}"
        if v.unknown is None:
            if blocks:
                this = "BLOCK"
            elif v.triggers & set(spec.policy.warn_when):
                this = "WARN"
        elif blocks or last is not None:
            this = "BLOCK"
            numbers = v.numbers if blocks or last is None else last.numbers()
            reason = (
                f"{v.name}: last seen blocking ({numbers or 'blockWhen'}), now {v.unknown}; "
                "the block holds until fresh data says otherwise"
            )
        else:
            this = {"Allow": "ALLOW", "Warn": "WARN", "Block": "BLOCK"}[spec.policy.on_unknown]  # type: ignore[assignment]
            if v.triggers & set(spec.policy.warn_when) and RANK[this] < RANK["WARN"]:
                this = "WARN"
        judged.append(
            dataclasses.replace(v, blocking=this == "BLOCK" and (blocks or last is not None))
        )
        if this != "ALLOW":
            reasons.append(reason)
        if RANK[this] > RANK[decision]:
            decision = this
    return GateVerdict(decision, tuple(reasons), tuple(judged))
