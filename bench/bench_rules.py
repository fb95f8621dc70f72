"""What slogate's generated rules cost Prometheus: long windows derived from recorded 5-minute
rates (what ``slogate rules`` and the controller write) against the same rules with every window
read from the raw series, at 1,000 and 5,000 SLOs, on the same data in one Prometheus.

Each SLO reads one service whose request counters are split by pod and status code, as real
request counters are, scraped every ``SCRAPE_S``. How much deriving saves grows with the number
of series a selector matches and with the scrape rate (a derived window reads one recorded
sample per interval, a raw one every sample of every series), so the raw variant runs on two
``LAYOUTS``: 10 and 50 series per service. The derived variant reads only the recorded rates,
the same whatever the layout. SLOs use a 1-day window (burn-rate windows 5m to 1d; 6h and 1d
derived) so that the history of 5,000 SLOs' recorded rates fits a quick backfill; a 3-day or
30-day window makes the raw variant read 3 or 30 times more and the derived one too, but the
derived one's per-rule overhead stays the same, so the ratio only grows.

Measured, per variant, after the rules were reloaded and every group ran at least twice:
Prometheus's own ``prometheus_rule_group_last_duration_seconds`` summed over slogate's groups,
Prometheus's CPU seconds per evaluation round, and missed iterations.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localenv.processes import cpu_seconds
from localenv.prometheus import PrometheusServer, Series, backfill_blocks
from slogate.core.alertrules import RuleOptions, record, rule_file, rule_group
from slogate.core.objective import SloSpec
from slogate.manifests import dump_yaml

SCRAPE_S = 30
BASE_INTERVAL_S = 60  # the generated groups' default interval: one recorded sample a minute
EVAL_S = 30  # the groups' interval while measured (rounds come sooner; reads are the same)
NAMESPACE = "bench"
WINDOW_S = 86400
HISTORY_S = WINDOW_S + 3600
RAW_EVERYTHING = RuleOptions(interval_s=EVAL_S, raw_max_s=10**9)
DERIVED = RuleOptions(interval_s=EVAL_S)


@dataclass(frozen=True)
class Layout:
    """How one metric's series are laid out: ``services`` x ``pods`` x two status codes."""

    metric: str
    services: int
    pods: int

    @property
    def per_selector(self) -> int:
        """Series a ``total`` selector matches (one service, every pod and code)."""
        return self.pods * 2


#: 500 series each; SLO i reads service i mod services of its layout.
LAYOUTS = {
    "long-raw": Layout("bench_rule_requests_total", services=50, pods=5),
    "long-raw-wide": Layout("bench_rule_wide_requests_total", services=10, pods=25),
}


@dataclass(frozen=True)
class Measured:
    n: int
    variant: str  # one of VARIANTS
    group_seconds: float  # sum over slogate's groups of their last evaluation's duration
    cpu_per_round: float  # Prometheus CPU seconds per evaluation round
    missed: float  # iterations Prometheus skipped because a group overran its interval


def slo_spec(i: int, layout: Layout = LAYOUTS["long-raw"]) -> SloSpec:
    metric = layout.metric
    service = f"svc-{i % layout.services}"
    return SloSpec.model_validate(
        {
            "service": service,
            "target": 99.9,
            "window": "1d",
            "indicator": {
                "ratio": {
                    "errors": f'{metric}{{service="{service}",code="500"}}',
                    "total": f'{metric}{{service="{service}"}}',
                }
            },
        }
    )


def raw_series(end: float) -> list[Series]:
    """Every layout's counters, one per service, pod and code, sampled every SCRAPE_S; each
    service serves 50 requests a second, 0.1% of them errors, whatever its number of pods."""
    start = end - HISTORY_S
    times = [start + SCRAPE_S * k for k in range(int(HISTORY_S // SCRAPE_S) + 1)]
    out = []
    for layout in LAYOUTS.values():
        for s in range(layout.services):
            for pod in range(layout.pods):
                for code, per_s in (("200", 49.95), ("500", 0.05)):
                    labels = {"service": f"svc-{s}", "pod": f"pod-{pod}", "code": code}
                    values = [per_s / layout.pods * (t - start) for t in times]
                    out.append(Series(layout.metric, labels, times, values))
    return out


def base_series(n: int, end: float) -> list[Series]:
    """The 5-minute records derived windows read, as the generated rules would have recorded
    them over the last day (one sample per BASE_INTERVAL_S)."""
    times = [end - WINDOW_S + BASE_INTERVAL_S * k for k in range(WINDOW_S // BASE_INTERVAL_S + 1)]
    out = []
    for i in range(n):
        labels = {"slo": f"slo-{i}", "namespace": NAMESPACE}
        out.append(Series("slogate:events:rate5m", labels, times, [50.0] * len(times)))
        out.append(Series("slogate:errors:rate5m", labels, times, [0.05] * len(times)))
    return out


#: The long windows of a 1-day SLO: what deriving replaces.
LONG_RECORDS = {record(m, w) for m in ("events", "errors") for w in (6 * 3600, WINDOW_S)}
VARIANTS = ("long-derived", *LAYOUTS, "whole-derived")


def variant_group(i: int, variant: str) -> dict[str, Any]:
    """``long-*``: only the long windows' records, derived or raw (from one of ``LAYOUTS``);
    ``whole-derived``: the group exactly as generated."""
    raw = variant in LAYOUTS
    spec = slo_spec(i, LAYOUTS[variant]) if raw else slo_spec(i)
    group = rule_group(NAMESPACE, f"slo-{i}", spec, RAW_EVERYTHING if raw else DERIVED)
    if variant.startswith("long-"):
        group["rules"] = [r for r in group["rules"] if r.get("record") in LONG_RECORDS]
    return group


def _metrics(prom: PrometheusServer) -> str:
    with urllib.request.urlopen(f"{prom.url}/metrics", timeout=30) as resp:
        text: str = resp.read().decode()
    return text


def _sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and "slogate/" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _evaluated_since(text: str, since: float, groups: int) -> bool:
    stamps = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prometheus_rule_group_last_evaluation_timestamp_seconds{")
        and "slogate/" in line
    ]
    return len(stamps) == groups and min(stamps) > since


def measure(prom: PrometheusServer, rules_path: Path, n: int, variant: str) -> Measured:
    groups = [variant_group(i, variant) for i in range(n)]
    rules_path.write_text(dump_yaml(rule_file(groups)))
    req = urllib.request.Request(f"{prom.url}/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=120):
        pass
    # Every group evaluated twice after the reload: the first round warms caches.
    for _ in range(2):
        since = time.time()
        deadline = time.monotonic() + 20 * EVAL_S
        while not _evaluated_since(_metrics(prom), since, n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{variant} rules for {n} SLOs did not all run within budget")
            time.sleep(2)
    assert prom.process is not None
    missed_before = _sum(_metrics(prom), "prometheus_rule_group_iterations_missed_total")
    cpu0, t0 = cpu_seconds(prom.process.pid), time.monotonic()
    time.sleep(2 * EVAL_S)
    cpu1, t1 = cpu_seconds(prom.process.pid), time.monotonic()
    text = _metrics(prom)
    return Measured(
        n=n,
        variant=variant,
        group_seconds=_sum(text, "prometheus_rule_group_last_duration_seconds"),
        cpu_per_round=(cpu1 - cpu0) / ((t1 - t0) / EVAL_S),
        missed=_sum(text, "prometheus_rule_group_iterations_missed_total") - missed_before,
    )


def run(sizes: list[int], work: Path) -> dict[str, Any]:
    """Both variants at every size in one Prometheus; returns rows for the report."""
    end = time.time()
    work.mkdir(parents=True, exist_ok=True)
    rules_path = work / "rules.yaml"
    rules_path.write_text("groups: []\n")
    prom = PrometheusServer(
        rule_files=[rules_path], workdir=work / "prometheus", out_of_order_window="1h"
    )
    t0 = time.perf_counter()
    series = raw_series(end) + base_series(max(sizes), end)
    samples = sum(len(s.values) for s in series)
    backfill_blocks(prom.data_dir, series, work)
    del series
    setup_s = time.perf_counter() - t0
    rows: list[Measured] = []
    try:
        prom.start()
        for n in sizes:
            for variant in VARIANTS:
                print(f"rules: {n} SLOs, {variant} long windows", flush=True)
                rows.append(measure(prom, rules_path, n, variant))
                print(rows[-1], flush=True)
    finally:
        prom.stop()
    return {
        "samples": samples,
        "setup_s": setup_s,
        "rows": [r.__dict__ for r in rows],
    }


def ratios(result: dict[str, Any]) -> dict[tuple[int, int], tuple[float, float]]:
    """Per size and series per selector, long windows only: (raw / derived group seconds,
    raw / derived CPU a round)."""
    by = {(r["n"], r["variant"]): r for r in result["rows"]}
    out = {}
    for n in sorted({r["n"] for r in result["rows"]}):
        d = by.get((n, "long-derived"))
        for variant, layout in LAYOUTS.items():
            r = by.get((n, variant))
            if d and r:
                out[(n, layout.per_selector)] = (
                    r["group_seconds"] / max(d["group_seconds"], 1e-9),
                    r["cpu_per_round"] / max(d["cpu_per_round"], 1e-9),
                )
    return out
