"""An SLO's status document, its conditions, and what changed between two of them.

Pure functions over plain dicts (the status exactly as it is stored), so the controller's only
jobs are to fetch numbers, call these, and write what they return.

Conditions (Kubernetes API conventions: type, status, reason, message, lastTransitionTime,
observedGeneration; the transition time only moves when ``status`` flips):

- ``Ready``: the last evaluation succeeded and the spec is usable.
- ``Stale``: the numbers shown are older than the last attempt (Prometheus failed); values are
  the last good ones.
- ``NoData``: no events over the compliance window, so budget and SLI are unknown.
- ``BudgetExhausted``: remaining budget is at or below zero.
- ``Achievable``: the target is at or below the dependency bound (Unknown without dependencies).
- ``RulesReady``: the SLO's PrometheusRule is written and current (absent when the controller
  keeps no rules, or the SLO turned them off).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slogate.core.slo.evaluate import SloResult
from slogate.core.slo.message import format_burn, format_percent
from slogate.core.timetext import rfc3339

CONDITION_TYPES = ("Ready", "Stale", "NoData", "BudgetExhausted", "Achievable", "RulesReady")
HEARTBEAT_S = 300.0


@dataclass(frozen=True)
class Problem:
    """Why an SLO cannot be (fully) evaluated: a condition reason, a message for humans, and
    the spec field to fix when one is at fault (``spec.prometheus.url``)."""

    reason: str
    message: str
    field: str | None = None

    @property
    def text(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True)
class RulesCondition:
    """How the SLO's generated Prometheus rules stand (the ``RulesReady`` condition)."""

    status: str  # "True" | "False"
    reason: str
    message: str


def with_rules_condition(
    status: dict[str, Any], cond: RulesCondition | None, now: float, generation: int | None
) -> dict[str, Any]:
    """``status`` with its ``RulesReady`` condition set to ``cond`` (removed when None)."""
    conds = [dict(c) for c in status.get("conditions") or []]
    if cond is None:
        conds = [c for c in conds if c.get("type") != "RulesReady"]
    else:
        set_condition(conds, "RulesReady", cond.status, cond.reason, cond.message, now, generation)
    return {**status, "conditions": conds}


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def coarse_time(when: float, now: float) -> float:
    """A forecast time rounded to what its distance justifies (a minute within the hour, ten
    minutes within the day, an hour beyond), so that it does not move, and cause a status
    write, on every evaluation."""
    ahead = when - now
    grain = 60.0 if ahead < 3600 else 600.0 if ahead < 86400 else 3600.0
    return round(when / grain) * grain


def condition(status: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    """The condition of type ``type_`` in ``status`` (an SLO's or a gate's), None when it has
    none: every reader of a condition goes through here."""
    conditions: list[dict[str, Any]] = (status or {}).get("conditions") or []
    return _in(conditions, type_)


def _in(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: float,
    generation: int | None,
) -> None:
    """Insert or update one condition in place, keeping lastTransitionTime unless it flips."""
    cond = _in(conditions, type_)
    if cond is not None:
        if cond["status"] != status:
            cond["lastTransitionTime"] = rfc3339(now)
        cond.update(status=status, reason=reason, message=message, observedGeneration=generation)
        return
    conditions.append(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": rfc3339(now),
            "observedGeneration": generation,
        }
    )


def _copy_conditions(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    conds = (previous or {}).get("conditions") or []
    return [dict(c) for c in conds if c.get("type") in CONDITION_TYPES]


def summary(status: dict[str, Any]) -> dict[str, str | None]:
    """The strings ``kubectl get slo`` shows (printer columns cannot format numbers)."""
    sli = status.get("sli")
    remaining = (status.get("errorBudget") or {}).get("remaining")
    burn1h = (status.get("burnRates") or {}).get("1h")
    return {
        "sli": None if sli is None else _sli_text(sli),
        "budget": None if remaining is None else format_percent(remaining),
        "burn1h": None if burn1h is None else format_burn(burn1h),
    }


def _sli_text(sli: float) -> str:
    text = f"{sli * 100:.3f}".rstrip("0").rstrip(".")
    return f"{text}%"


def evaluated_status(
    result: SloResult,
    previous: dict[str, Any] | None,
    *,
    generation: int | None,
    now: float,
    problems: list[Problem],
) -> dict[str, Any]:
    """The status after a successful evaluation; ``problems`` (e.g. an unknown dependency or a
    latency threshold that is not a bucket bound) make Ready False but keep the numbers."""
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "lastEvaluationTime": rfc3339(now),
        **result.to_status(),
    }
    when = result.forecast.exhaustion_time
    status["forecast"]["exhaustionTime"] = None if when is None else rfc3339(coarse_time(when, now))
    conds = _copy_conditions(previous)
    if problems:
        set_condition(
            conds,
            "Ready",
            "False",
            problems[0].reason,
            "; ".join(p.text for p in problems),
            now,
            generation,
        )
    else:
        set_condition(
            conds,
            "Ready",
            "True",
            "Evaluated",
            "SLI, budget and burn rates are current",
            now,
            generation,
        )
    set_condition(conds, "Stale", "False", "Fresh", "", now, generation)
    no_data = result.sli is None
    set_condition(
        conds,
        "NoData",
        "True" if no_data else "False",
        "NoTraffic" if no_data else "HasTraffic",
        "no events over the compliance window; budget and SLI are unknown" if no_data else "",
        now,
        generation,
    )
    remaining = result.remaining
    if remaining is None:
        set_condition(conds, "BudgetExhausted", "Unknown", "NoData", "", now, generation)
    elif remaining <= 0:
        set_condition(
            conds,
            "BudgetExhausted",
            "True",
            "BudgetSpent",
            f"error budget remaining {format_percent(remaining)}",
            now,
            generation,
        )
    else:
        set_condition(
            conds,
            "BudgetExhausted",
            "False",
            "BudgetLeft",
            f"error budget remaining {format_percent(remaining)}",
            now,
            generation,
        )
    rec = result.recommendation
    if rec.achievable is None:
        set_condition(conds, "Achievable", "Unknown", "NoDependencyBound", "", now, generation)
    else:
        set_condition(
            conds,
            "Achievable",
            "True" if rec.achievable else "False",
            "WithinDependencyBound" if rec.achievable else "AboveDependencyBound",
            f"dependencies allow at most {rec.dependency_bound}%",
            now,
            generation,
        )
    status["conditions"] = conds
    status["summary"] = summary(status)
    return status


def failed_status(
    previous: dict[str, Any] | None,
    *,
    generation: int | None,
    now: float,
    problem: Problem,
) -> dict[str, Any]:
    """The status after a failed evaluation: the last good numbers, marked Stale and not Ready."""
    status = dict(previous or {})
    status["observedGeneration"] = generation
    conds = _copy_conditions(previous)
    set_condition(conds, "Ready", "False", problem.reason, problem.text, now, generation)
    set_condition(
        conds,
        "Stale",
        "True",
        problem.reason,
        "showing the last good evaluation"
        if previous and previous.get("sli") is not None
        else "no successful evaluation yet",
        now,
        generation,
    )
    status["conditions"] = conds
    if not status.get("risk"):
        status["risk"] = "UNKNOWN"
    status["message"] = f"Evaluation failed: {problem.text}"
    status["summary"] = summary(status)
    return status


def invalid_spec_reported(status: dict[str, Any] | None, generation: int | None) -> bool:
    """Was this generation already marked ``Ready=False, InvalidSpec``? (Our own status write
    comes back through the watch and must not trigger another.)"""
    ready = condition(status, "Ready")
    return (
        (status or {}).get("observedGeneration") == generation
        and ready is not None
        and ready.get("reason") == "InvalidSpec"
    )


def visible(status: dict[str, Any] | None) -> dict[str, Any]:
    """What a user sees, without the timestamps that move on every evaluation."""
    if not status:
        return {}
    out = {k: v for k, v in status.items() if k != "lastEvaluationTime"}
    out["conditions"] = sorted(
        (
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or []
        ),
        key=lambda c: str(c.get("type")),
    )
    return out


def needs_write(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    last_write: float,
    now: float,
    heartbeat_s: float = HEARTBEAT_S,
) -> bool:
    """Write when something a user sees changed, or as a heartbeat so lastEvaluationTime stays
    recent enough to tell a live controller from a dead one."""
    return visible(old) != visible(new) or now - last_write >= heartbeat_s


def heartbeat_phase(key: str, heartbeat_s: float = HEARTBEAT_S) -> float:
    """A fixed offset in [0, heartbeat_s) per object. SLOs first written together (a controller
    start) would otherwise all heartbeat on the same tick, every heartbeat: a burst of
    thousands of writes and watch events. Delaying the first heartbeat by ``phase`` spreads
    them over the whole heartbeat period, and later ones stay spread."""
    return zlib.crc32(key.encode()) / 2**32 * heartbeat_s


def _status_and_reason(cond: Mapping[str, Any] | None) -> tuple[str, str] | None:
    return None if cond is None else (str(cond.get("status")), str(cond.get("reason")))


def transitions(old: dict[str, Any] | None, new: dict[str, Any]) -> list[Event]:
    """Events worth telling on-call about, each only when the state changes (never per tick)."""
    events: list[Event] = []
    msg = str(new.get("message") or "")
    exhausted_old = (condition(old, "BudgetExhausted") or {}).get("status")
    exhausted_new = (condition(new, "BudgetExhausted") or {}).get("status")
    if exhausted_new == "True" and exhausted_old != "True":
        events.append(Event("Warning", "BudgetExhausted", msg))
    old_firing = set((old or {}).get("firing") or [])
    new_firing = set(new.get("firing") or [])
    started = sorted(new_firing - old_firing)
    if started:
        events.append(Event("Warning", "BurnRateFiring", f"{', '.join(started)} firing: {msg}"))
    old_risk, new_risk = (old or {}).get("risk"), new.get("risk")
    if old_risk in ("FREEZE", "DANGER") and new_risk in ("SAFE", "OBSERVE"):
        events.append(Event("Normal", "Recovered", f"risk {old_risk} -> {new_risk}: {msg}"))
    rules_old, rules_new = condition(old, "RulesReady"), condition(new, "RulesReady")
    if (
        rules_new is not None
        and rules_new.get("status") == "False"
        and _status_and_reason(rules_old) != _status_and_reason(rules_new)
    ):
        reason, message = str(rules_new.get("reason")), str(rules_new.get("message"))
        events.append(Event("Warning", reason, message))
    ready = condition(new, "Ready")
    ready_old = (condition(old, "Ready") or {}).get("status")
    ready_new = (ready or {}).get("status")
    if ready is not None and ready_new == "False" and ready_old != "False":
        events.append(Event("Warning", ready["reason"], ready["message"]))
    elif ready_new == "True" and ready_old == "False":
        events.append(Event("Normal", "EvaluationRecovered", "evaluation succeeds again"))
    return events
