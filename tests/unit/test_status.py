"""Status documents, conditions and the Events they trigger (pure functions)."""

from typing import Any

from slogate.core.slo.evaluate import Forecast, Recommendation, SloResult
from slogate.core.status import (
    Problem,
    RulesCondition,
    coarse_time,
    condition,
    evaluated_status,
    failed_status,
    heartbeat_phase,
    invalid_spec_reported,
    needs_write,
    set_condition,
    transitions,
    with_rules_condition,
)

NOW = 1_800_000_000.0


def result(
    remaining: float | None = 0.5,
    firing: tuple[str, ...] = (),
    risk: str = "SAFE",
    achievable: bool | None = None,
) -> SloResult:
    consumed = None if remaining is None else 1 - remaining
    return SloResult(
        sli=None if remaining is None else 0.9995,
        consumed=consumed,
        remaining=remaining,
        burn_rates={"1h": None if remaining is None else 0.5, "5m": None},
        firing=firing,
        risk=risk,
        forecast=Forecast(None, "never", None, "stable", "high", "history"),
        recommendation=Recommendation(
            99.9, 99.95, 99.9 if achievable is not None else None, achievable
        ),
        message="msg",
    )


def conds(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_condition_is_found_by_type_and_set_condition_updates_that_one() -> None:
    st = evaluated_status(result(), None, generation=3, now=NOW, problems=[])
    stale = condition(st, "Stale")
    assert stale is not None and (stale["status"], stale["reason"]) == ("False", "Fresh")
    assert condition(st, "RulesReady") is None
    assert condition({}, "Ready") is None and condition(None, "Ready") is None
    assert condition({"conditions": None}, "Ready") is None
    set_condition(st["conditions"], "Stale", "True", "PrometheusTimeout", "", NOW + 30, 3)
    assert condition(st, "Stale") is stale and stale["status"] == "True"
    assert [c["type"] for c in st["conditions"]].count("Stale") == 1


def test_invalid_spec_is_reported_once_per_generation() -> None:
    conditions: list[dict[str, Any]] = []
    set_condition(conditions, "Ready", "False", "InvalidSpec", "spec.target: too high", NOW, 2)
    reported = {"observedGeneration": 2, "conditions": conditions}
    assert invalid_spec_reported(reported, 2)
    assert not invalid_spec_reported(reported, 3)
    assert not invalid_spec_reported(None, 2)
    failed = failed_status(
        None, generation=2, now=NOW, problem=Problem("PrometheusUnreachable", "refused")
    )
    assert not invalid_spec_reported(failed, 2)


def test_evaluated_status_conditions_and_summary() -> None:
    st = evaluated_status(result(), None, generation=3, now=NOW, problems=[])
    assert conds(st) == {
        "Ready": "True",
        "Stale": "False",
        "NoData": "False",
        "BudgetExhausted": "False",
        "Achievable": "Unknown",
    }
    assert st["observedGeneration"] == 3
    assert st["summary"] == {"sli": "99.95%", "budget": "50%", "burn1h": "0.5x"}
    assert all(c["observedGeneration"] == 3 for c in st["conditions"])


def test_exhausted_and_no_data() -> None:
    st = evaluated_status(result(-0.29), None, generation=1, now=NOW, problems=[])
    assert conds(st)["BudgetExhausted"] == "True"
    empty = evaluated_status(result(None, risk="UNKNOWN"), None, generation=1, now=NOW, problems=[])
    assert conds(empty)["NoData"] == "True"
    assert conds(empty)["BudgetExhausted"] == "Unknown"
    assert empty["summary"] == {"sli": None, "budget": None, "burn1h": None}


def test_transition_time_moves_only_when_status_flips() -> None:
    first = evaluated_status(result(), None, generation=1, now=NOW, problems=[])
    later = evaluated_status(result(0.4), first, generation=1, now=NOW + 600, problems=[])
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times["BudgetExhausted"] == "2027-01-15T08:00:00Z"
    flipped = evaluated_status(result(-0.1), later, generation=1, now=NOW + 1200, problems=[])
    moved = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert moved["BudgetExhausted"] == "2027-01-15T08:20:00Z"
    assert moved["Ready"] == times["Ready"]


def test_failure_keeps_last_values_and_marks_stale() -> None:
    good = evaluated_status(result(), None, generation=1, now=NOW, problems=[])
    bad = failed_status(
        good,
        generation=1,
        now=NOW + 30,
        problem=Problem("PrometheusUnreachable", "connection refused"),
    )
    assert bad["sli"] == good["sli"]
    assert bad["errorBudget"] == good["errorBudget"]
    assert bad["lastEvaluationTime"] == good["lastEvaluationTime"]
    assert conds(bad)["Ready"] == "False"
    assert conds(bad)["Stale"] == "True"
    events = transitions(good, bad)
    assert [(e.type, e.reason) for e in events] == [("Warning", "PrometheusUnreachable")]
    assert events[0].message == "connection refused"
    back = evaluated_status(result(), bad, generation=1, now=NOW + 60, problems=[])
    assert [e.reason for e in transitions(bad, back)] == ["EvaluationRecovered"]


def test_problems_make_ready_false_but_keep_numbers() -> None:
    st = evaluated_status(
        result(),
        None,
        generation=1,
        now=NOW,
        problems=[Problem("UnknownDependency", "dependsOn names x")],
    )
    assert conds(st)["Ready"] == "False"
    assert st["errorBudget"]["remaining"] == 0.5


def test_needs_write_ignores_timestamps_but_honours_heartbeat() -> None:
    a = evaluated_status(result(), None, generation=1, now=NOW, problems=[])
    b = evaluated_status(result(), a, generation=1, now=NOW + 30, problems=[])
    assert not needs_write(a, b, last_write=NOW, now=NOW + 30)
    assert needs_write(a, b, last_write=NOW, now=NOW + 300)
    c = evaluated_status(result(0.49), a, generation=1, now=NOW + 30, problems=[])
    assert needs_write(a, c, last_write=NOW, now=NOW + 30)


def test_heartbeat_phases_spread_slos_over_the_period() -> None:
    keys = [f"team-{i % 50:02d}/slo-{i:04d}" for i in range(5000)]
    phases = [heartbeat_phase(k, 300.0) for k in keys]
    assert all(0 <= p < 300 for p in phases)
    assert heartbeat_phase(keys[0], 300.0) == phases[0]  # fixed per object, across restarts
    # 5,000 SLOs written on one tick: the following heartbeats fall on every 30 s tick of the
    # period, about 500 each, instead of 5,000 on one.
    per_tick = [sum(1 for p in phases if k * 30 <= p < (k + 1) * 30) for k in range(10)]
    assert min(per_tick) > 400 and max(per_tick) < 600, per_tick


def test_events_only_on_transitions() -> None:
    calm = evaluated_status(result(), None, generation=1, now=NOW, problems=[])
    burning = evaluated_status(
        result(0.4, ("page-fast",), "FREEZE"), calm, generation=1, now=NOW + 30, problems=[]
    )
    assert [e.reason for e in transitions(calm, burning)] == ["BurnRateFiring"]
    assert transitions(burning, burning) == []
    spent = evaluated_status(
        result(-0.01, ("page-fast",), "FREEZE"), burning, generation=1, now=NOW + 60, problems=[]
    )
    assert [e.reason for e in transitions(burning, spent)] == ["BudgetExhausted"]
    recovered = evaluated_status(result(0.2), spent, generation=1, now=NOW + 90, problems=[])
    assert [e.reason for e in transitions(spent, recovered)] == ["Recovered"]


def test_coarse_time_grain_grows_with_distance() -> None:
    assert coarse_time(NOW + 1234, NOW) % 60 == 0
    assert coarse_time(NOW + 7 * 3600 + 123, NOW) % 600 == 0
    assert coarse_time(NOW + 5 * 86400 + 1800 + 7, NOW) % 3600 == 0


def test_rules_condition_is_kept_across_evaluations_and_told_once() -> None:
    missing = RulesCondition("False", "PrometheusRuleCRDMissing", "install the CRD")
    first = with_rules_condition(
        evaluated_status(result(), None, generation=1, now=NOW, problems=[]), missing, NOW, 1
    )
    assert conds(first)["RulesReady"] == "False"
    assert [e.reason for e in transitions(None, first)] == ["PrometheusRuleCRDMissing"]
    # The next evaluation copies the condition; re-applying the same one tells nobody again.
    again = with_rules_condition(
        evaluated_status(result(), first, generation=1, now=NOW + 30, problems=[]),
        missing,
        NOW + 30,
        1,
    )
    assert transitions(first, again) == []
    assert not needs_write(first, again, last_write=NOW, now=NOW + 30)
    written = RulesCondition("True", "RulesWritten", "current")
    ok = with_rules_condition(again, written, NOW + 60, 1)
    assert conds(ok)["RulesReady"] == "True"
    assert transitions(again, ok) == []
    flipped = next(c for c in ok["conditions"] if c["type"] == "RulesReady")
    assert (
        flipped["lastTransitionTime"]
        != next(c for c in again["conditions"] if c["type"] == "RulesReady")["lastTransitionTime"]
    )
    # Rules turned off: the condition goes away instead of standing stale.
    assert "RulesReady" not in conds(with_rules_condition(ok, None, NOW + 90, 2))
