"""Prometheus faults, injected by fault proxies in front of the real Prometheus.

One controller evaluates one SLO per fault, each SLO pointing at its own ``FaultProxy``
(``spec.prometheus.url``), so every fault runs at the same time against the same process: a
baseline with every proxy passing, then every fault at once for about two and a half evaluation
intervals, then every proxy passing again. A control SLO on the controller's default backend (no
proxy) must keep being evaluated on schedule the whole time.

Each SLO reads the same 31-day history: a service that burnt its budget at 3x for four weeks and
runs at 0.2x now, so its 30-day budget is overspent (about -180%) while the last hours look
healthy. Keeping "the last good values" and rebuilding the long history can therefore not be
confused with numbers computed from the last hour only. Each SLO has a ReleaseGate with its own
``onUnknown``, so "the gate follows onUnknown" is observable per fault.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.faultproxy import FaultProxy
from localenv.objects import release_gate
from localenv.processes import cpu_seconds
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess
from localenv.synthetic import Phase, Story, counters, story
from tests.integration.faults import (
    apply,
    condition,
    log_problems,
    matrix_row,
    matrix_rows_from,
    ratio_indicator,
    remove_objects,
    slo_manifest,
)

pytest_plugins = ["tests.integration.reliability_matrix"]
pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "rel-prom"
METRIC = "relp_requests_total"
TARGET = 99.9
WINDOW_S = 30 * 86400
INTERVAL_S = 10
FAULT_S = 24.0  # every fault lasts this long: at least two failing evaluations
TIMEOUT_S = 1  # --prometheus-timeout
RETRIES = 1  # --prometheus-retries
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    inject: Callable[[FaultProxy], None]
    reason: str | None  # Ready=False reason expected during the fault; None: stays Ready
    on_unknown: str
    expected: str
    retried: bool = True


CASES = [
    Case(
        "down",
        "Prometheus down (port closed: connection refused)",
        lambda p: p.down(),
        "PrometheusUnreachable",
        "Allow",
        "Ready=False/Stale=True PrometheusUnreachable; last good values kept; the gate, last "
        "seen blocking, stays BLOCK (sticky: onUnknown Allow does not open it); bounded "
        "retries; one Event; recovers by itself",
    ),
    Case(
        "reset",
        "connections reset (TCP RST after the request)",
        lambda p: p.reset_connections(),
        "PrometheusUnreachable",
        "Warn",
        "Ready=False/Stale=True PrometheusUnreachable; values kept; gate stays BLOCK (sticky, "
        "not onUnknown Warn); recovers",
    ),
    Case(
        "slow",
        f"slow past the timeout (3 s delay, timeout {TIMEOUT_S} s)",
        lambda p: p.slow(3),
        "PrometheusTimeout",
        "Block",
        "Ready=False/Stale=True PrometheusTimeout; values kept; gate stays BLOCK (sticky); "
        "recovers",
    ),
    Case(
        "5xx",
        "HTTP 503 on every query",
        lambda p: p.respond(503),
        "PrometheusServerError",
        "Warn",
        "Ready=False/Stale=True PrometheusServerError; values kept; gate stays BLOCK (sticky, "
        "not onUnknown Warn); recovers",
    ),
    Case(
        "429",
        "HTTP 429 with Retry-After: 2",
        lambda p: p.respond(429, "slow down", headers={"Retry-After": "2"}),
        "PrometheusServerError",
        "Allow",
        "Ready=False/Stale=True PrometheusServerError (rate limited); Retry-After honoured, "
        "no hammering; gate stays BLOCK (sticky); recovers",
    ),
    Case(
        "garbage",
        "malformed JSON (HTTP 200, body cut off)",
        lambda p: p.garbage(),
        "BadPrometheusResponse",
        "Block",
        "Ready=False/Stale=True BadPrometheusResponse; values kept; gate stays BLOCK "
        "(sticky); recovers",
    ),
    Case(
        "shape",
        'well-formed JSON of the wrong shape (resultType "string")',
        lambda p: p.respond(
            200,
            '{"status":"success","data":{"resultType":"string","result":[0,"x"]}}',
            content_type=JSON,
        ),
        "BadPrometheusResponse",
        "Warn",
        "Ready=False/Stale=True BadPrometheusResponse; values kept; gate stays BLOCK "
        "(sticky); recovers",
    ),
    Case(
        "401",
        "HTTP 401 (credentials refused)",
        lambda p: p.respond(
            401,
            '{"status":"error","errorType":"unauthorized","error":"invalid credentials"}',
            content_type=JSON,
        ),
        "PrometheusUnauthorized",
        "Block",
        "Ready=False/Stale=True PrometheusUnauthorized, not retried (a 4xx does not heal by "
        "itself); values kept; gate stays BLOCK (sticky); recovers",
        retried=False,
    ),
    Case(
        "nan",
        "NaN samples (every value rewritten to NaN)",
        lambda p: p.nan("NaN"),
        "BadPrometheusResponse",
        "Allow",
        "NaN never reaches status; event counts cannot be NaN (increase() of a counter is a "
        "finite number), so the answer is a bad response: Ready=False/Stale=True "
        "BadPrometheusResponse, last good values kept, gate stays BLOCK (sticky); recovers",
    ),
    Case(
        "inf",
        "+Inf samples (every value rewritten to +Inf)",
        lambda p: p.nan("+Inf"),
        "BadPrometheusResponse",
        "Warn",
        "+Inf never reaches status; Ready=False/Stale=True BadPrometheusResponse, last good "
        "values kept (not replaced by NoData), gate stays BLOCK (sticky); recovers",
    ),
    Case(
        "empty",
        "empty results (series missing) for the current windows",
        lambda p: p.empty(),
        None,
        "Allow",
        "No series is no traffic: the short-window burn rates read null (never 0 or NaN), "
        "the 30-day SLI and budget stay as counted from the stored history, Ready=True, gate "
        "decision unchanged (BLOCK); recovers",
    ),
]


def build_story(now: float) -> Story:
    # 29 days at burn 3, then 2 days (and 15 minutes into the future) at burn 0.2.
    return story([Phase(29 * 1440, 1000.0, 0.003), Phase(2 * 1440 + 15, 1000.0, 0.0002)], now + 900)


def status_of(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", NS).get("status") or {})


def statuses(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    items = cp.get_json("slo", "-n", NS)["items"]
    return {i["metadata"]["name"]: dict(i.get("status") or {}) for i in items}


def gates(cp: ControlPlane) -> dict[str, str | None]:
    items = cp.get_json("gate", "-n", NS)["items"]
    return {i["metadata"]["name"]: (i.get("status") or {}).get("decision") for i in items}


def non_finite(value: Any) -> list[Any]:
    """Every NaN/Inf number (or a string spelling one) anywhere in a status."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [value]
    if isinstance(value, str):
        return [value] if value.strip().lower() in ("nan", "+inf", "-inf", "inf") else []
    if isinstance(value, dict):
        return [x for v in value.values() for x in non_finite(v)]
    if isinstance(value, list):
        return [x for v in value for x in non_finite(v)]
    return []


def numbers(status: dict[str, Any]) -> tuple[Any, Any]:
    return status.get("sli"), (status.get("errorBudget") or {}).get("remaining")


def ready(status: dict[str, Any]) -> bool:
    return (
        condition(status, "Ready").get("status") == "True"
        and condition(status, "Stale").get("status") == "False"
    )


@dataclass
class Scenario:
    story: Story
    truth_remaining: float
    baseline: dict[str, dict[str, Any]]
    baseline_gates: dict[str, str | None]
    polls: list[dict[str, dict[str, Any]]]  # during the fault, about once a second
    gate_polls: list[dict[str, str | None]]
    reached: dict[str, float]  # seconds from injection to the expected condition
    fault_requests: dict[str, int]
    unreachable_attempts: float
    fault_window_s: float
    cpu_fraction: float
    after: dict[str, dict[str, Any]]
    after_gates: dict[str, str | None]
    recovered: dict[str, float]
    events: list[dict[str, Any]]
    control_evaluations: list[str]  # lastEvaluationTime of the control SLO during the fault
    controller: ControllerProcess
    cold_during: dict[str, Any]
    cold_gate_during: str | None
    tick_s: float  # mean evaluation tick during the faults


def expected_during(case: Case, status: dict[str, Any]) -> bool:
    if case.reason is None:
        return bool(status.get("lastEvaluationTime")) and (
            (status.get("burnRates") or {}).get("5m") is None
        )
    ready_c = condition(status, "Ready")
    return ready_c.get("status") == "False" and ready_c.get("reason") == case.reason


@pytest.fixture(scope="module")
def scenario(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    cp = control_plane
    s = build_story(time.time())
    prometheus.backfill(
        counters(s, METRIC, {"job": "svc"}, error_labels={"code": "500"}, ok_labels={"code": "200"})
    )
    cp.kubectl("create", "namespace", NS)
    proxies = {c.key: FaultProxy(prometheus.url) for c in CASES}
    proxies["cold"] = FaultProxy(prometheus.url)
    for proxy in proxies.values():
        proxy.start()
    # The cold-start SLO first meets a Prometheus that answers with empty results.
    proxies["cold"].empty()
    work = tmp_path_factory.mktemp("rel-prom")
    ctl = ControllerProcess(
        cp.kubeconfig,
        prometheus.url,
        work / "controller.log",
        "--log-format",
        "plain",
        "--prometheus-timeout",
        str(TIMEOUT_S),
        "--prometheus-retries",
        str(RETRIES),
        "--heartbeat",
        str(INTERVAL_S),
        "--namespace",
        NS,
        # Each SLO names its own (faulty) backend: the admin's allow-list must list them.
        *(f"--prometheus-allowed-url={p.url}" for p in proxies.values()),
    )
    try:
        docs: list[dict[str, Any]] = []
        names = [c.key for c in CASES] + ["cold"]
        for key in names:
            docs.append(
                slo_manifest(
                    f"slo-{key}",
                    NS,
                    target=TARGET,
                    indicator=ratio_indicator(METRIC, "svc"),
                    evaluation={"interval": f"{INTERVAL_S}s"},
                    prometheus={"url": proxies[key].url},
                )
            )
        docs.append(
            slo_manifest(
                "control",
                NS,
                target=TARGET,
                indicator=ratio_indicator(METRIC, "svc"),
                evaluation={"interval": f"{INTERVAL_S}s"},
            )
        )
        on_unknown = {c.key: c.on_unknown for c in CASES} | {"cold": "Allow"}
        for key in names:
            docs.append(
                release_gate(
                    f"gate-{key}",
                    NS,
                    key,
                    [f"slo-{key}"],
                    policy={"onUnknown": on_unknown[key]},
                )
            )
        apply(cp, *docs)
        yield _run(cp, s, proxies, ctl)
    finally:
        remove_objects(cp, NS)
        ctl.stop()
        for proxy in proxies.values():
            proxy.stop()
        print(Path(work / "controller.log").read_text()[-6000:])


def _run(
    cp: ControlPlane, s: Story, proxies: dict[str, FaultProxy], ctl: ControllerProcess
) -> Scenario:
    keys = [c.key for c in CASES]

    # 1. Baseline: every SLO evaluated from Prometheus, every gate BLOCK (budget overspent).
    deadline = time.monotonic() + 60
    while True:
        base = statuses(cp)
        g = gates(cp)
        wanted = [f"slo-{k}" for k in keys] + ["control"]
        if all(ready(base.get(n, {})) for n in wanted) and all(
            g.get(f"gate-{k}") == "BLOCK" for k in keys
        ):
            break
        assert time.monotonic() < deadline, (
            f"no baseline: not ready {[n for n in wanted if not ready(base.get(n, {}))]}, gates {g}"
        )
        time.sleep(0.5)
    truth = 1 - s.consumed(WINDOW_S, time.time(), TARGET)

    # 2. Every fault at once.
    unreachable0 = ctl.metric("slogate_prometheus_requests_total", outcome="unreachable")
    ticks0 = (
        ctl.metric("slogate_evaluation_duration_seconds_sum"),
        ctl.metric("slogate_evaluation_duration_seconds_count"),
    )
    cpu0, t0 = cpu_seconds(ctl.pid), time.monotonic()
    for case in CASES:
        proxies[case.key].clear()
        case.inject(proxies[case.key])
    polls, gate_polls, reached, control = [], [], {}, []
    while time.monotonic() - t0 < FAULT_S:
        now = statuses(cp)
        polls.append(now)
        gate_polls.append(gates(cp))
        control.append(str(now["control"].get("lastEvaluationTime")))
        for case in CASES:
            if case.key not in reached and expected_during(case, now[f"slo-{case.key}"]):
                reached[case.key] = time.monotonic() - t0
        time.sleep(1.0)
    window = time.monotonic() - t0
    cpu = (cpu_seconds(ctl.pid) - cpu0) / window
    fault_requests = {c.key: proxies[c.key].requests for c in CASES}
    unreachable = (
        ctl.metric("slogate_prometheus_requests_total", outcome="unreachable") - unreachable0
    )
    cold_during = statuses(cp)["slo-cold"]
    tick_s = (ctl.metric("slogate_evaluation_duration_seconds_sum") - ticks0[0]) / max(
        ctl.metric("slogate_evaluation_duration_seconds_count") - ticks0[1], 1
    )
    cold_gate = gates(cp).get("gate-cold")

    # 3. Every proxy passes again; the operator must recover by itself.
    t1 = time.monotonic()
    for proxy in proxies.values():
        proxy.pass_through()
    recovered: dict[str, float] = {}
    while time.monotonic() - t1 < 40 and len(recovered) < len(keys):
        now = statuses(cp)
        g = gates(cp)
        for key in keys:
            st = now[f"slo-{key}"]
            if key not in recovered and ready(st) and g.get(f"gate-{key}") == "BLOCK":
                fresh = (st.get("burnRates") or {}).get("5m") is not None
                if fresh:
                    recovered[key] = time.monotonic() - t1
        time.sleep(0.5)
    time.sleep(1.0)
    after = statuses(cp)
    events = cp.get_json("events", "-n", NS)["items"]
    return Scenario(
        story=s,
        truth_remaining=truth,
        baseline=base,
        baseline_gates=g,
        polls=polls,
        gate_polls=gate_polls,
        reached=reached,
        fault_requests=fault_requests,
        unreachable_attempts=unreachable,
        fault_window_s=window,
        cpu_fraction=cpu,
        after=after,
        after_gates=gates(cp),
        recovered=recovered,
        events=events,
        control_evaluations=control,
        controller=ctl,
        cold_during=cold_during,
        cold_gate_during=cold_gate,
        tick_s=tick_s,
    )


def _events(sc: Scenario, name: str, reason: str) -> int:
    return sum(
        1 for e in sc.events if e["involvedObject"]["name"] == name and e["reason"] == reason
    )


def _params() -> list[Any]:
    out = []
    for case in CASES:
        out.append(pytest.param(case, id=case.key))
    return out


@matrix_rows_from("case")
@pytest.mark.parametrize("case", _params())
def test_prometheus_fault(scenario: Scenario, case: Case, observe: Callable[[str], None]) -> None:
    sc = scenario
    name = f"slo-{case.key}"
    base = sc.baseline[name]
    ticks = math.ceil(sc.fault_window_s / INTERVAL_S) + 1
    attempts = RETRIES + 1 if case.retried else 1
    requests = sc.fault_requests[case.key]
    reached = (
        f"reached in {sc.reached[case.key]:.1f}s" if case.key in sc.reached else "never reached"
    )
    observe(
        f"{reached}; {requests} requests at the proxy in {sc.fault_window_s:.0f}s"
        f"; recovered in {sc.recovered.get(case.key, math.inf):.1f}s"
    )
    # The baseline is the truth counted from the story, so "kept" means "kept right".
    assert numbers(base)[1] == pytest.approx(sc.truth_remaining, abs=0.02)

    # NaN/Inf never reach a status, at any moment of the fault.
    for poll in sc.polls:
        assert non_finite(poll[name]) == [], poll[name]

    # The expected condition is reached within about one evaluation.
    assert case.key in sc.reached, sc.polls[-1][name]
    assert sc.reached[case.key] <= INTERVAL_S + 9
    during = [p[name] for p in sc.polls if p is not None]
    settled = [st for st in during if expected_during(case, st)]
    assert settled
    if case.reason is not None:
        # The last good values stay, frozen, marked stale with the same reason.
        assert len({(numbers(st), st["lastEvaluationTime"]) for st in settled}) == 1, settled
        for st in settled:
            assert numbers(st)[0] == pytest.approx(numbers(base)[0], abs=1e-5)
            assert numbers(st)[1] == pytest.approx(numbers(base)[1], abs=1e-3)
            assert condition(st, "Stale")["status"] == "True"
            assert condition(st, "Stale")["reason"] == case.reason
            assert "Evaluation failed:" in st["message"]
        # One Event for the transition, not one per failing evaluation.
        assert _events(sc, name, case.reason) == 1
        # The data is stale but was last seen blocking (budget exhausted): the gate keeps
        # blocking whatever its onUnknown says (a sticky block), until fresh data says
        # otherwise. An outage must not open a gate.
        assert sc.gate_polls[-1][f"gate-{case.key}"] == "BLOCK"
    else:
        for st in settled:
            assert condition(st, "Ready")["status"] == "True"
            assert condition(st, "Stale")["status"] == "False"
            assert st["burnRates"]["5m"] is None and st["burnRates"]["1h"] is None
            # The 30-day numbers come from the stored hourly history.
            assert numbers(st)[1] == pytest.approx(numbers(base)[1], abs=0.01)
        assert sc.gate_polls[-1][f"gate-{case.key}"] == "BLOCK"

    # No hot loop: at most (retries + 1) attempts per SLO and evaluation.
    if case.key != "down":  # refused connections never reach the proxy; see test below
        assert requests <= attempts * ticks + 1, requests
        assert requests >= 1

    # Recovery without any restart.
    assert case.key in sc.recovered, sc.after[name]
    after = sc.after[name]
    assert ready(after)
    assert numbers(after)[1] == pytest.approx(sc.truth_remaining, abs=0.02)
    assert sc.after_gates[f"gate-{case.key}"] == "BLOCK"
    if case.reason is not None:
        assert _events(sc, name, "EvaluationRecovered") == 1


@matrix_row(
    "cold start against empty results: the controller first meets a Prometheus that answers "
    "every query with an empty result, which then recovers",
    "NoData=True / risk UNKNOWN while empty, gate onUnknown Allow -> ALLOW; once data is "
    "there the whole 30-day history is loaded (budget counted from 30 days, not from the "
    "last hour), gate BLOCK",
)
def test_cold_start_on_empty_results_loads_full_history_later(
    scenario: Scenario, observe: Callable[[str], None]
) -> None:
    sc = scenario
    during = sc.cold_during
    assert condition(during, "NoData")["status"] == "True", during
    assert during["risk"] == "UNKNOWN"
    assert sc.cold_gate_during == "ALLOW"
    after = sc.after["slo-cold"]
    observe(
        f"after recovery: remaining {numbers(after)[1]} (truth {sc.truth_remaining:.2f}), "
        f"risk {after.get('risk')}, gate {sc.after_gates.get('gate-cold')}"
    )
    assert numbers(after)[1] == pytest.approx(sc.truth_remaining, abs=0.02)
    assert after["risk"] == "FREEZE"
    assert sc.after_gates["gate-cold"] == "BLOCK"


@matrix_row(
    "all eleven faults at once, for about 2.5 evaluation intervals",
    "the controller process stays up, logs no traceback, uses little CPU (< 25% of one core), "
    "refused connections are retried at most (retries + 1) times per evaluation, and SLOs on "
    "healthy backends keep being evaluated on schedule",
)
def test_no_crash_no_hot_loop_healthy_backends_unaffected(
    scenario: Scenario, observe: Callable[[str], None]
) -> None:
    sc = scenario
    ctl = sc.controller
    observe(
        f"controller CPU {sc.cpu_fraction:.1%} of one core during the faults; "
        f"{sc.unreachable_attempts:.0f} unreachable attempts (down + reset) in "
        f"{sc.fault_window_s:.0f}s; control SLO evaluated "
        f"{len(set(sc.control_evaluations))} times; an evaluation tick took {sc.tick_s:.1f}s "
        "on average (backends are evaluated concurrently; conditions appeared "
        f"{min(sc.reached.values(), default=math.inf):.1f}s after the faults)"
    )
    assert ctl.alive(), ctl.log_tail()
    assert log_problems(ctl) == []
    assert sc.cpu_fraction < 0.25
    ticks = math.ceil(sc.fault_window_s / INTERVAL_S) + 1
    # "down" and "reset" are the only sources of unreachable attempts.
    assert sc.unreachable_attempts <= 2 * (RETRIES + 1) * ticks + 2
    # The control SLO (default backend, no fault) keeps its heartbeat at the interval.
    assert len(set(sc.control_evaluations)) >= math.floor(sc.fault_window_s / INTERVAL_S)
    for poll in sc.polls:
        assert ready(poll["control"])
