"""The controller against a real kube-apiserver and a real Prometheus with known histories.

Every expected number is computed here from the per-minute event counts that were written to
Prometheus (``Story.events``), never from the operator's own code. The backfilled history runs
15 minutes into the future, so windows ending "now" stay fully covered while the tests run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.controlplane import ControlPlane
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess
from localenv.synthetic import Phase, Story, counters, histogram, story
from slogate.core.timetext import parse_rfc3339

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]

NS = "ctl"
DAY_MIN = 1440
RATE = 1000.0  # requests per minute
FUTURE_MIN = 15
WINDOW_S = 30 * 86400


def _days(d: float) -> int:
    return int(d * DAY_MIN)


def build_stories(now: float) -> dict[str, Story]:
    end = now + FUTURE_MIN * 60
    f = FUTURE_MIN
    return {
        # burn 0.2 all month
        "healthy": story([Phase(_days(31) + f, RATE, 0.0002)], end),
        # burn 0.1, then burn 30 for the last 40 minutes: page-fast (1h and 5m above 14.4)
        "fastburn": story([Phase(_days(31) - 40, RATE, 0.0001), Phase(40 + f, RATE, 0.03)], end),
        # burn 0.3, then 3.5 for two days: ticket-fast (1d and 2h above 3) but no page
        "slowburn": story([Phase(_days(29), RATE, 0.0003), Phase(_days(2) + f, RATE, 0.0035)], end),
        # burn 1.5 all month: overspent by half
        "exhausted": story([Phase(_days(31) + f, RATE, 0.0015)], end),
        # counters exist but never move
        "idle": story([Phase(_days(31) + f, 0.0, 0.0)], end),
        # 0.5% slower than 300ms against a 99% target: burn 0.5
        "latency": story([Phase(_days(29) + f, RATE, 0.005)], end),
    }


def calendar_story(now: float) -> tuple[Story, float]:
    """Burn 5 before this month began (must not count), burn 0.5 since (UTC month)."""
    import datetime as dt

    today = dt.datetime.fromtimestamp(now, dt.UTC)
    month_start = dt.datetime(today.year, today.month, 1, tzinfo=dt.UTC).timestamp()
    in_month = int((now + FUTURE_MIN * 60 - month_start) // 60)
    s = story(
        [Phase(_days(10), RATE, 0.005), Phase(in_month, RATE, 0.0005)], month_start + in_month * 60
    )
    return s, month_start


def slo(name: str, indicator: dict[str, Any], target: float = 99.9, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "slogate.dev/v1alpha1",
        "kind": "ServiceLevelObjective",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "service": name,
            "target": target,
            "indicator": indicator,
            "evaluation": {"interval": "10s"},
            **spec,
        },
    }


def ratio(job: str) -> dict[str, Any]:
    return {
        "ratio": {
            "errors": f'ctl_requests_total{{job="{job}",code="500"}}',
            "total": f'ctl_requests_total{{job="{job}"}}',
        }
    }


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane,
    prometheus: PrometheusServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    now = time.time()
    stories = build_stories(now)
    cal, month_start = calendar_story(now)
    series = []
    for job, s in stories.items():
        if job == "latency":
            series += histogram(
                s, "ctl_duration_seconds", {"job": job}, ["0.1", "0.30", "1"], "0.30"
            )
        else:
            series += counters(
                s,
                "ctl_requests_total",
                {"job": job},
                error_labels={"code": "500"},
                ok_labels={"code": "200"},
            )
    series += counters(
        cal,
        "ctl_requests_total",
        {"job": "calendar"},
        error_labels={"code": "500"},
        ok_labels={"code": "200"},
    )
    prometheus.backfill(series)

    control_plane.kubectl("create", "namespace", NS)
    log = tmp_path_factory.mktemp("controller") / "controller.log"
    # Only this module's namespace: other modules' SLOs must not count in the cost per tick.
    ctl = ControllerProcess(
        control_plane.kubeconfig, prometheus.url, log, "--log-format", "plain", "--namespace", NS
    )
    try:
        yield from _apply_and_wait(control_plane, stories, cal, month_start, ctl, log)
    finally:
        ctl.stop()
        print(Path(log).read_text()[-5000:])


def _apply_and_wait(
    control_plane: ControlPlane,
    stories: dict[str, Story],
    cal: Story,
    month_start: float,
    ctl: ControllerProcess,
    log: Path,
) -> Iterator[dict[str, Any]]:
    manifests = [
        slo(job, ratio(job)) for job in ("healthy", "fastburn", "slowburn", "exhausted", "idle")
    ]
    manifests.append(
        slo(
            "latency",
            {"latency": {"histogram": 'ctl_duration_seconds{job="latency"}', "threshold": 0.3}},
            target=99,
            window="28d",
        )
    )
    manifests.append(slo("calendar", ratio("calendar"), calendar={"period": "month"}))
    manifests.append(
        slo(
            "bad-threshold",
            {"latency": {"histogram": 'ctl_duration_seconds{job="latency"}', "threshold": 0.25}},
            target=99,
        )
    )
    applied = control_plane.kubectl(
        "apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests)
    )
    assert applied.returncode == 0, applied.stderr
    names = [m["metadata"]["name"] for m in manifests]
    wait_for(control_plane, names, lambda st: bool(st.get("conditions")))
    yield {"stories": stories, "calendar": (cal, month_start), "ctl": ctl, "log": log}


def status_of(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(cp.get_json("slo", name, "-n", NS).get("status") or {})


def wait_for(cp: ControlPlane, names: list[str], ok: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending and time.monotonic() < deadline:
        pending = [n for n in pending if not ok(status_of(cp, n))]
        if pending:
            time.sleep(0.5)
    assert not pending, f"no status for {pending}: {[status_of(cp, n) for n in pending]}"


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["type"] == type_]
    assert len(found) == 1, status.get("conditions")
    return found[0]


def no_nan_anywhere(value: Any) -> None:
    if isinstance(value, float):
        assert math.isfinite(value), value
    elif isinstance(value, dict):
        for v in value.values():
            no_nan_anywhere(v)
    elif isinstance(value, list):
        for v in value:
            no_nan_anywhere(v)


def expect_budget(s: Story, status: dict[str, Any], target: float, window_s: float) -> None:
    at = time.time()
    expected = s.consumed(window_s, at, target)
    # Hourly history buckets spread events evenly inside an hour: error << 1% of budget here.
    assert status["errorBudget"]["consumed"] == pytest.approx(expected, abs=0.01)
    assert status["errorBudget"]["remaining"] == pytest.approx(1 - expected, abs=0.01)
    bad, total = s.events(at - window_s, at)
    assert status["sli"] == pytest.approx(1 - bad / total, abs=2e-5)


def test_healthy_service(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    st = status_of(control_plane, "healthy")
    expect_budget(world["stories"]["healthy"], st, 99.9, WINDOW_S)
    assert st["risk"] == "SAFE"
    assert st["firing"] == []
    assert st["burnRates"]["1h"] == pytest.approx(0.2, abs=0.02)
    assert st["forecast"]["exhaustsIn"] == "never"
    assert condition(st, "BudgetExhausted")["status"] == "False"
    assert condition(st, "Ready")["status"] == "True"
    no_nan_anywhere(st)


def test_fast_burn_pages_and_freezes(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    st = status_of(control_plane, "fastburn")
    s = world["stories"]["fastburn"]
    now = time.time()
    assert st["burnRates"]["1h"] == pytest.approx(s.burn(3600, now, 99.9), rel=0.05)
    assert st["burnRates"]["5m"] == pytest.approx(30, rel=0.05)
    assert "page-fast" in st["firing"]
    assert st["risk"] == "FREEZE"
    expect_budget(s, st, 99.9, WINDOW_S)


def test_slow_burn_tickets_and_forecasts(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    st = status_of(control_plane, "slowburn")
    s = world["stories"]["slowburn"]
    assert "ticket-fast" in st["firing"]
    assert not {"page-fast", "page-slow"} & set(st["firing"])
    assert st["risk"] == "DANGER"
    expect_budget(s, st, 99.9, WINDOW_S)
    # Old events at burn 0.3 age out while new ones arrive at 3.5: the budget falls by
    # (3.5 - 0.3) / 30 of itself per day, so it lasts remaining * 30 / 3.2 days.
    remaining = 1 - s.consumed(WINDOW_S, time.time(), 99.9)
    days = remaining * 30 / 3.2
    exhaustion = st["forecast"]["exhaustionTime"]
    assert exhaustion is not None
    moment = parse_rfc3339(exhaustion)
    assert (moment - time.time()) / 86400 == pytest.approx(days, rel=0.05)
    assert st["forecast"]["exhaustsIn"].startswith(f"{int(days)}d")


def test_exhausted_budget(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    st = status_of(control_plane, "exhausted")
    expect_budget(world["stories"]["exhausted"], st, 99.9, WINDOW_S)
    assert st["errorBudget"]["remaining"] < 0
    cond = condition(st, "BudgetExhausted")
    assert cond["status"] == "True"
    assert cond["reason"] == "BudgetSpent"
    assert st["risk"] == "FREEZE"
    assert st["forecast"]["exhaustsIn"] == "exhausted"


def test_no_traffic_is_unknown_not_nan(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    st = status_of(control_plane, "idle")
    assert st["risk"] == "UNKNOWN"
    assert st["sli"] is None
    assert st["errorBudget"]["remaining"] is None
    assert all(v is None for v in st["burnRates"].values()), st["burnRates"]
    assert condition(st, "NoData")["status"] == "True"
    no_nan_anywhere(st)


def test_latency_histogram_with_differently_written_le(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    st = status_of(control_plane, "latency")
    # The SLO says threshold 0.3; the histogram's bucket is labelled le="0.30".
    assert condition(st, "Ready")["status"] == "True", st["conditions"]
    expect_budget(world["stories"]["latency"], st, 99.0, 28 * 86400)
    assert st["burnRates"]["1h"] == pytest.approx(0.5, abs=0.03)
    assert st["risk"] == "SAFE"


def test_threshold_that_is_not_a_bucket_is_reported(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    st = status_of(control_plane, "bad-threshold")
    ready = condition(st, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "ThresholdNotABucket"
    assert "0.1, 0.30, 1" in ready["message"]


def test_calendar_window_resets_at_month_start(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    st = status_of(control_plane, "calendar")
    cal, month_start = world["calendar"]
    bad, total = cal.events(month_start, time.time())
    # Only this month's burn 0.5 counts, not the burn 5 before the first.
    assert st["errorBudget"]["consumed"] == pytest.approx((bad / total) / 0.001, abs=0.01)
    assert st["errorBudget"]["consumed"] == pytest.approx(0.5, abs=0.01)


def test_kubectl_get_slo_columns(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    out = control_plane.kubectl("get", "slo", "-n", NS, check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split()[:7] == [
        "NAME",
        "TARGET",
        "SLI",
        "BUDGET",
        "BURN-1H",
        "RISK",
        "EXHAUSTS",
    ]
    assert rows["healthy"][1:6] == ["99.9", "99.98%", "80%", "0.2x", "SAFE"]
    assert rows["healthy"][6] == "never"
    assert rows["exhausted"][5:7] == ["FREEZE", "exhausted"]
    assert rows["fastburn"][5] == "FREEZE"
    assert rows["slowburn"][5] == "DANGER"
    assert rows["idle"][1] == "99.9"
    assert "UNKNOWN" in rows["idle"]


def test_events_on_transitions(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    events = control_plane.get_json("events", "-n", NS)["items"]
    by = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert ("exhausted", "BudgetExhausted") in by
    assert ("fastburn", "BurnRateFiring") in by
    assert ("bad-threshold", "ThresholdNotABucket") in by
    # A healthy SLO has nothing to announce (rules aside: without the PrometheusRule CRD, as
    # here, every SLO says so once; test_rules_keeper.py covers that Event).
    assert not any(
        name == "healthy" and reason != "PrometheusRuleCRDMissing" for name, reason in by
    )
    # Several ticks have passed since: each transition was announced exactly once.
    count = sum(
        1
        for e in events
        if e["involvedObject"]["name"] == "exhausted" and e["reason"] == "BudgetExhausted"
    )
    assert count == 1


def test_operator_metrics(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    ctl: ControllerProcess = world["ctl"]
    remaining = ctl.metric("slogate_slo_error_budget_remaining", namespace=NS, name="exhausted")
    assert remaining == pytest.approx(-0.5, abs=0.02)
    assert ctl.metric("slogate_slo_risk", name="fastburn", risk="FREEZE") == 1.0
    assert ctl.metric("slogate_slo_burn_rate", name="healthy", window="1h") == pytest.approx(
        0.2, abs=0.02
    )
    assert ctl.metric("slogate_prometheus_requests_total") > 0
    assert ctl.metric("slogate_evaluation_duration_seconds_count") > 0


def test_steady_state_cost_per_tick(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    """Once history is loaded, a tick costs a fraction of a request per SLO and no writes."""
    ctl: ControllerProcess = world["ctl"]
    evals0 = ctl.metric("slogate_evaluations_total")
    reqs0 = ctl.metric("slogate_prometheus_requests_total")
    writes0 = ctl.metric("slogate_status_writes_total")
    time.sleep(25)  # at least two ticks at the 10s interval
    evals = ctl.metric("slogate_evaluations_total") - evals0
    reqs = ctl.metric("slogate_prometheus_requests_total") - reqs0
    writes = ctl.metric("slogate_status_writes_total") - writes0
    assert evals >= 2 * 8
    per_slo = reqs / evals
    print(
        f"steady state: {per_slo:.3f} Prometheus requests and {writes / evals:.3f} status "
        f"writes per SLO evaluation ({evals:.0f} evaluations)"
    )
    # 8 SLOs: one batched request for the counts SLOs per tick, plus the bucket probe of the
    # misconfigured latency SLO; no history re-scan.
    assert per_slo <= 0.5
    assert writes / evals <= 0.2


def test_target_change_reevaluates(control_plane: ControlPlane, world: dict[str, Any]) -> None:
    before = status_of(control_plane, "healthy")
    patched = control_plane.kubectl(
        "patch", "slo", "healthy", "-n", NS, "--type=merge", "-p", '{"spec": {"target": 99.8}}'
    )
    assert patched.returncode == 0, patched.stderr
    gen = control_plane.get_json("slo", "healthy", "-n", NS)["metadata"]["generation"]
    wait_for(control_plane, ["healthy"], lambda st: st.get("observedGeneration") == gen, timeout=30)
    after = status_of(control_plane, "healthy")
    # Same events, twice the budget: half the consumption.
    assert after["errorBudget"]["consumed"] == pytest.approx(
        before["errorBudget"]["consumed"] / 2, abs=0.005
    )
    assert after["burnRates"]["1h"] == pytest.approx(0.1, abs=0.01)


def test_slos_carry_no_finalizer_and_are_forgotten_on_delete(
    control_plane: ControlPlane, world: dict[str, Any]
) -> None:
    ctl: ControllerProcess = world["ctl"]
    meta = control_plane.get_json("slo", "idle", "-n", NS)["metadata"]
    # slogate writes only status: no finalizer that could block a deletion (or a namespace's)
    # once slogate is uninstalled, no bookkeeping annotations.
    assert not meta.get("finalizers"), meta
    assert not [k for k in meta.get("annotations") or {} if k.startswith("slogate.dev/")], meta
    assert 'name="idle"' in ctl.metrics_text()
    deleted = control_plane.kubectl("delete", "slo", "idle", "-n", NS, "--timeout=30s")
    assert deleted.returncode == 0, deleted.stderr
    gone = control_plane.kubectl("get", "slo", "idle", "-n", NS)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    deadline = time.monotonic() + 15
    while 'name="idle"' in ctl.metrics_text():
        assert time.monotonic() < deadline, "the deleted SLO's metrics are still exported"
        time.sleep(0.2)
