"""What slogate's generated rules cost Prometheus: long windows derived from recorded 5-minute
rates (what ``slogate rules`` and the controller write) against the same rules with every window
read from the raw series, at 1,000 and 5,000 SLOs, on the same data in one Prometheus.

The SLOs are the default shape: a 30-day window, so the long windows are 6h, 1d, 3d (burn-rate
rules) and 30d (the budget). SLO *i* reads one of ``SERVICES`` services whose request counters
are split by ``PODS`` pods and two status codes (10 series a ``total`` selector matches), scraped
every ``SCRAPE_S``: how much deriving saves grows with that number of series and with the scrape
rate (a derived window reads one recorded sample a minute, a raw one every sample of every
series). A derived window of SLO *i* reads the 5-minute rates recorded for SLO *i* mod
``RATE_SERIES`` (``slo="rates-<k>"``), so that 30 days of them fit a quick backfill: a read costs
the same whichever SLO's series it reads, and every group still writes its own records.

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

SERVICES = 10
PODS = 5
SCRAPE_S = 30
RATE_SERIES = 100  # SLOs whose recorded 5-minute rates are backfilled (see above)
BASE_INTERVAL_S = 60  # the generated groups' default interval: one recorded sample a minute
EVAL_S = 30  # the groups' interval while measured (rounds come sooner; reads are the same)
NAMESPACE = "bench"
METRIC = "bench_rule_requests_total"
WINDOW_S = 30 * 86400
HISTORY_S = WINDOW_S + 3600
WHOLE_MAX_N = 1000  # whole groups only up to here: at 5,000 they overrun a 30 s round anyway
RAW_EVERYTHING = RuleOptions(interval_s=EVAL_S, raw_max_s=10**9)
DERIVED = RuleOptions(interval_s=EVAL_S)


@dataclass(frozen=True)
class Measured:
    n: int
    variant: str  # one of VARIANTS
    group_seconds: float  # sum over slogate's groups of their last evaluation's duration
    cpu_per_round: float  # Prometheus CPU seconds per evaluation round
    missed: float  # iterations Prometheus skipped because a group overran its interval


def slo_spec(i: int) -> SloSpec:
    service = f"svc-{i % SERVICES}"
    return SloSpec.model_validate(
        {
            "service": service,
            "target": 99.9,
            "window": "30d",
            "indicator": {
                "ratio": {
                    "errors": f'{METRIC}{{service="{service}",code="500"}}',
                    "total": f'{METRIC}{{service="{service}"}}',
                }
            },
        }
    )


def raw_series(end: float) -> list[Series]:
    """Every service's counters, one per pod and code, sampled every SCRAPE_S; each service
    serves 50 requests a second, 0.1% of them errors."""
    start = end - HISTORY_S
    times = [start + SCRAPE_S * k for k in range(int(HISTORY_S // SCRAPE_S) + 1)]
    out = []
    for s in range(SERVICES):
        for pod in range(PODS):
            for code, per_s in (("200", 49.95), ("500", 0.05)):
                labels = {"service": f"svc-{s}", "pod": f"pod-{pod}", "code": code}
                values = [per_s / PODS * (t - start) for t in times]
                out.append(Series(METRIC, labels, times, values))
    return out


def base_series(end: float) -> list[Series]:
    """The 5-minute rates derived windows read, as the generated rules would have recorded
    them over the last 30 days (one sample per BASE_INTERVAL_S)."""
    times = [end - WINDOW_S + BASE_INTERVAL_S * k for k in range(WINDOW_S // BASE_INTERVAL_S + 1)]
    out = []
    for k in range(RATE_SERIES):
        labels = {"slo": f"rates-{k}", "namespace": NAMESPACE}
        out.append(Series("slogate:events:rate5m", labels, times, [50.0] * len(times)))
        out.append(Series("slogate:errors:rate5m", labels, times, [0.05] * len(times)))
    return out


#: The long windows of a 30-day SLO: what deriving replaces.
LONG_WINDOWS_S = (6 * 3600, 86400, 3 * 86400, WINDOW_S)
LONG_RECORDS = {record(m, w) for m in ("events", "errors") for w in LONG_WINDOWS_S}
VARIANTS = ("long-derived", "long-raw", "whole-derived")


def variant_group(i: int, variant: str) -> dict[str, Any]:
    """``long-*``: only the long windows' records, derived or raw; ``whole-derived``: the
    group exactly as generated. Derived windows read the backfilled rates of SLO i mod
    RATE_SERIES; each record is still labelled with its own SLO."""
    raw = variant == "long-raw"
    group = rule_group(NAMESPACE, f"slo-{i}", slo_spec(i), RAW_EVERYTHING if raw else DERIVED)
    if variant.startswith("long-"):
        group["rules"] = [r for r in group["rules"] if r.get("record") in LONG_RECORDS]
    for rule in group["rules"]:
        if rule.get("record") in LONG_RECORDS:
            rule["expr"] = rule["expr"].replace(f'slo="slo-{i}"', f'slo="rates-{i % RATE_SERIES}"')
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
        deadline = time.monotonic() + 40 * EVAL_S
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
    series = raw_series(end) + base_series(end)
    samples = sum(len(s.values) for s in series)
    backfill_blocks(prom.data_dir, series, work)
    del series
    setup_s = time.perf_counter() - t0
    rows: list[Measured] = []
    try:
        prom.start()
        for n in sizes:
            for variant in VARIANTS:
                if variant == "whole-derived" and n > WHOLE_MAX_N:
                    continue
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


def ratios(result: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """Per size, long windows only: (raw / derived group seconds, raw / derived CPU a round)."""
    by = {(r["n"], r["variant"]): r for r in result["rows"]}
    out = {}
    for n in sorted({r["n"] for r in result["rows"]}):
        d, r = by.get((n, "long-derived")), by.get((n, "long-raw"))
        if d and r:
            out[n] = (
                r["group_seconds"] / max(d["group_seconds"], 1e-9),
                r["cpu_per_round"] / max(d["cpu_per_round"], 1e-9),
            )
    return out
