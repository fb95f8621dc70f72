"""The controller's compact per-SLO state gives the same answers as the plain structures it
replaced: chunked math, the budget-sample ring, the shifted history, the per-SLO metrics."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from slogate import memory, metrics
from slogate.controller import evaluator as ev_module
from slogate.controller.entries import BUDGET_GRID_S, BudgetSamples, SloEntry
from slogate.controller.evaluator import Evaluator, EvaluatorSettings, _shift_in
from slogate.core.durations import format_duration
from slogate.core.increments import bucket_end
from slogate.core.objective import SloSpec
from slogate.core.policy import history_span_s
from slogate.core.slo import SloInput, evaluate, stack
from slogate.core.slo.inputs import SloBatch
from slogate.core.slo.rules import BurnRule

HOUR = 3600
DAY = 86400
NOW = 1_750_000_123.0

# --- chunked math -------------------------------------------------------------------------------

RULES = {
    "rules": [
        {"name": "page-fast", "long": "1h", "short": "5m", "burnRate": 10, "severity": "page"},
        {"name": "ticket-slow", "long": "1d", "short": "2h", "burnRate": 2, "severity": "ticket"},
    ]
}


def _spec(i: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "service": f"s{i % 5}",
        "target": (99.9, 99.5, 99.0)[i % 3],
        "indicator": {"ratio": {"errors": f'e{{i="{i}"}}', "total": f't{{i="{i}"}}'}},
    }
    kind = i % 5
    if kind == 0:
        spec["window"] = "30d"
    elif kind == 1:  # shares its rules with kind 2 but not its window
        spec["window"] = "7d"
        spec["alerting"] = RULES
    elif kind == 2:
        spec["window"] = "28d"
        spec["alerting"] = RULES
    elif kind == 3:  # shares the 30d default rules, with a 31d history
        spec["calendar"] = {"period": "month"}
    else:
        spec["window"] = "30d"
        spec["indicator"] = {"query": {"errorRatio": f'rate(r{{i="{i}"}}[{{{{window}}}}])'}}
    return spec


def _fleet(n: int) -> tuple[Evaluator, dict[tuple[str, str], dict[str, float]], float]:
    ev = Evaluator(lambda url: None, None, EvaluatorSettings())  # type: ignore[arg-type,return-value]
    boundary = bucket_end(NOW, HOUR)
    tail = int(NOW - boundary)
    short: dict[tuple[str, str], dict[str, float]] = {}
    for i in range(n):
        body = {"metadata": {"namespace": "ns", "name": f"slo-{i}", "uid": f"u{i}"}}
        entry = ev.upsert({**body, "spec": _spec(i)}, SloSpec.model_validate(_spec(i)))
        rng = np.random.default_rng(i)
        values: dict[str, float] = {}
        if entry.ratio_only:
            for w in entry.windows_s:
                values[format_duration(w)] = float(rng.uniform(0, 0.01))
            entry.long_ratios = {
                w: float(rng.uniform(0, 0.01))
                for w in [*entry.windows_s, ev._compliance_span(entry, NOW)]
                if w > ev.settings.direct_max_s
            }
        else:
            size = math.ceil(history_span_s(entry.spec) / HOUR) + 1
            total = rng.uniform(0, 1e5, size)
            bad = total * rng.uniform(0, 0.01 if i % 4 else 0.03, size)
            if i % 7 == 0:
                bad[rng.integers(0, size, 20)] = np.nan
            entry.hist_bad, entry.hist_total, entry.hist_end = bad, total, boundary
            for w in entry.windows_s:
                t = float(rng.uniform(0, w * 30))
                values[f"t/{format_duration(w)}"] = t
                values[f"b/{format_duration(w)}"] = t * float(rng.uniform(0, 0.02))
            values[f"t/{tail}s"], values[f"b/{tail}s"] = 1000.0, 3.0
        for k in range(int(rng.integers(0, 12))):
            entry.budget_samples.put(int(NOW) // BUDGET_GRID_S - k, float(rng.uniform(0, 1)))
        short[entry.key] = values
    return ev, short, boundary


def test_chunked_compute_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    ev, short, boundary = _fleet(120)
    groups: dict[Any, list[SloEntry]] = {}
    for entry in ev.entries.values():
        groups.setdefault(entry.rules, []).append(entry)
    assert any(len({e.spec.window_seconds for e in g}) > 1 for g in groups.values())
    monkeypatch.setattr(ev_module, "COMPUTE_ROWS", 10_000)
    whole = [r for g in groups.values() for r in ev._compute(g, short, NOW, boundary)]
    monkeypatch.setattr(ev_module, "COMPUTE_ROWS", 7)
    chunked = [r for g in groups.values() for r in ev._compute(g, short, NOW, boundary)]
    assert chunked == whole
    assert {r.forecast.method for r in whole} >= {"history", "calendar", "least-squares"}


def test_longest_window_sets_the_daily_look_back() -> None:
    """A row evaluated alone, told the fleet's longest window, is the row evaluated with it."""
    rng = np.random.default_rng(3)
    hb, ht = rng.uniform(0, 3, 30 * 24), rng.uniform(50, 150, 30 * 24)
    counts = {300: 1.0, HOUR: 1.0}, {300: 30.0, HOUR: 100.0}
    short = SloInput(99.0, 7 * DAY, *counts, 400, 16_800, hist_bad=hb, hist_total=ht)
    long = SloInput(99.0, 30 * DAY, *counts, 1500, 72_000, hist_bad=hb, hist_total=ht)
    rules = (BurnRule("page", long_s=HOUR, short_s=300, burn_rate=10, severity="page"),)
    together = evaluate(stack([short, long], [300, HOUR], NOW), rules).row(0)
    alone = stack([short], [300, HOUR], NOW)
    assert alone.longest_window_s == 7 * DAY
    told = SloBatch(**{**_fields(alone), "longest_window_s": 30.0 * DAY})
    assert evaluate(told, rules).row(0) == together
    assert evaluate(alone, rules).row(0).recommendation == together.recommendation


def _fields(batch: SloBatch) -> dict[str, Any]:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


# --- history shift ------------------------------------------------------------------------------


@pytest.mark.parametrize("fresh", [1, 3, 10, 11, 25])
def test_shift_in_matches_concatenation_without_keeping_it(fresh: int) -> None:
    old = np.arange(10, dtype=np.float64)
    new = np.arange(100, 100 + fresh, dtype=np.float64)
    got = _shift_in(old, new)
    assert got.tolist() == np.concatenate([old, new])[-10:].tolist()
    assert got.base is None and got.shape == (10,)


# --- budget samples -----------------------------------------------------------------------------


def test_budget_samples_behave_like_the_last_n_slots() -> None:
    rnd = random.Random(5)
    ring = BudgetSamples(12)
    reference: OrderedDict[int, float] = OrderedDict()
    slot = 1000
    for _ in range(500):
        slot += rnd.choice([0, 1, 1, 1, 2, 5, 13])
        value = rnd.random()
        ring.put(slot, value)
        reference[slot] = value
        while len(reference) > 12:
            reference.popitem(last=False)
        grid = np.full(12, np.nan)
        ring.fill(grid, slot - 11)
        for k in range(12):
            want = reference.get(slot - 11 + k, math.nan)
            assert ring.get(slot - 11 + k) == want or math.isnan(want)
            assert grid[k] == want or (math.isnan(grid[k]) and math.isnan(want))
    assert len(ring.values) <= 12


def test_budget_samples_fill_partial_and_older_slots() -> None:
    ring = BudgetSamples(5)
    ring.put(10, 1.0)
    ring.put(8, 0.5)  # a slot before the first one kept
    ring.put(3, 9.0)  # too old: more than 5 slots before the newest
    assert [ring.get(s) for s in (8, 9, 10)][0::2] == [0.5, 1.0]
    assert math.isnan(ring.get(9)) and math.isnan(ring.get(3))
    out = np.full(4, -1.0)
    ring.fill(out, 9)
    assert math.isnan(out[0]) and out[1] == 1.0 and out[2:].tolist() == [-1.0, -1.0]
    assert len(ring) == 2


# --- per-SLO metrics ----------------------------------------------------------------------------


def _status(rnd: random.Random) -> dict[str, Any]:
    windows = ["5m", "30m", "1h", "6h", "1d", "3d"]
    return {
        "sli": rnd.choice([None, rnd.random()]),
        "errorBudget": {"remaining": rnd.choice([None, rnd.uniform(-1, 1)])},
        "burnRates": {w: rnd.choice([None, rnd.uniform(0, 20)]) for w in rnd.sample(windows, 3)},
        "firing": rnd.sample(["page-fast", "ticket-slow", "page-slow"], rnd.randint(0, 2)),
        "risk": rnd.choice([None, "SAFE", "FREEZE"]),
        "forecast": {"exhaustsIn": rnd.choice([None, "exhausted"])},
        "conditions": [{"type": "Ready", "status": rnd.choice(["True", "False"])}],
    }


class _GaugeReference:
    """The former implementation, condensed: one labelled Gauge child per series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        slo = ("namespace", "name", "service")

        def gauge(name: str, *extra: str) -> Gauge:
            return Gauge(f"slogate_slo_{name}", "x", (*slo, *extra), registry=self.registry)

        self.simple = {
            key: gauge(key)
            for key in ("error_budget_remaining", "sli", "target", "forecast_exhaustion_seconds")
        }
        self.ready = gauge("ready")
        self.burn, self.risk, self.firing = (
            gauge("burn_rate", "window"),
            gauge("risk", "risk"),
            gauge("firing", "rule"),
        )
        self.windows: dict[tuple[str, str], set[str]] = {}
        self.rules: dict[tuple[str, str], set[str]] = {}
        self.services: dict[tuple[str, str], str] = {}

    def forget(self, ns: str, name: str) -> None:
        service = self.services.pop((ns, name), None)
        self.windows.pop((ns, name), None)
        self.rules.pop((ns, name), None)
        for g in (*self.simple.values(), self.ready, self.burn, self.risk, self.firing):
            for labels in [k for k in g._metrics if k[:3] == (ns, name, service)]:
                g.remove(*labels)

    def record(self, ns: str, name: str, service: str, target: float, st: dict[str, Any]) -> None:
        key = (ns, name)
        if self.services.get(key, service) != service:
            self.forget(ns, name)
        self.services[key] = service
        labels = (ns, name, service)
        values = {
            "error_budget_remaining": (st.get("errorBudget") or {}).get("remaining"),
            "sli": st.get("sli"),
            "target": target / 100,
            "forecast_exhaustion_seconds": 0.0 if st["forecast"].get("exhaustsIn") else None,
        }
        for k, value in values.items():
            if value is None:
                if labels in self.simple[k]._metrics:
                    self.simple[k].remove(*labels)
            else:
                self.simple[k].labels(*labels).set(value)
        burn = st.get("burnRates") or {}
        for window in self.windows.get(key, set()) | set(burn):
            if burn.get(window) is None:
                if (*labels, window) in self.burn._metrics:
                    self.burn.remove(*labels, window)
            else:
                self.burn.labels(*labels, window).set(burn[window])
        self.windows[key] = set(burn)
        current = st.get("risk") or "UNKNOWN"
        for level in metrics.RISKS:
            self.risk.labels(*labels, level).set(1.0 if level == current else 0.0)
        self.ready.labels(*labels).set(1.0 if st["conditions"][0]["status"] == "True" else 0.0)
        now = set(st.get("firing") or [])
        self.rules[key] = self.rules.get(key, set()) | now
        for rule in self.rules[key]:
            self.firing.labels(*labels, rule).set(1.0 if rule in now else 0.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.startswith("slogate_slo_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_slo_series_export_what_labelled_gauges_did() -> None:
    rnd = random.Random(11)
    series = metrics.SloSeries()
    registry = CollectorRegistry()
    registry.register(series)
    reference = _GaugeReference()
    for step in range(600):
        ns, name = f"n{rnd.randint(0, 2)}", f"s{rnd.randint(0, 15)}"
        if rnd.random() < 0.07:
            series.forget(ns, name)
            reference.forget(ns, name)
        else:
            service, status = rnd.choice("aab"), _status(rnd)
            series.record(ns, name, service, 99.9, status)
            reference.record(ns, name, service, 99.9, status)
        if step % 25 == 0:
            assert _samples(registry) == _samples(reference.registry), step


def test_slo_families_are_exported_without_slos() -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(metrics.SloSeries())
    names = {family.name for family in registry.collect()}
    assert {"slogate_slo_error_budget_remaining", "slogate_slo_burn_rate", "slogate_slo_risk",
            "slogate_slo_firing", "slogate_slo_target"} <= names  # fmt: skip


def test_trimmer_is_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)
    now = [0.0]
    trimmer = memory.Trimmer(min_interval_s=10, clock=lambda: now[0])
    for t in (0.0, 1.0, 9.9, 10.0, 15.0, 25.0):
        now[0] = t
        trimmer()
    assert len(calls) == 3
    assert memory.trim() in (True, False)  # harmless wherever it runs


def test_arena_cap_leaves_an_explicit_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # An operator who sets glibc's own variable gets exactly that.
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_arenas() is False
