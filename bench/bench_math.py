"""Benchmark of the SLO math: all outputs for 10,000 SLOs with 30-day hourly histories.

Run from the repository root:

    .venv/bin/python bench/bench_math.py [--slos 10000] [--runs 7]

The process pins itself to one CPU core (and BLAS to one thread) so the number is a one-core
number. It prints the machine, the numeric evaluation time (``evaluate``: every array the status
needs) and, separately, the per-row formatting time (``results()`` with messages and
``to_status()``), as medians over several runs. Target: numeric part under 100 ms.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from slogate.core.increments import window_sums  # noqa: E402
from slogate.core.slo import (  # noqa: E402
    STANDARD_WINDOWS_S,
    SloBatch,
    default_rules,
    evaluate,
)

HOUR = 3600
DAY = 86400


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


def make_batch(n: int, seed: int = 7) -> SloBatch:
    """A mixed fleet: busy and quiet services, diurnal traffic, incidents, gaps, 28d windows,
    calendar months, SLOs without history (least-squares fallback) and dependency bounds."""
    rng = np.random.default_rng(seed)
    t = 30 * 24
    now = 1_763_800_000.0
    targets = rng.choice([99.0, 99.5, 99.9, 99.95, 99.99], size=n)
    b = 1 - targets / 100
    hours = np.arange(t)
    diurnal = 1 + 0.6 * np.sin(2 * np.pi * (hours % 24) / 24)
    rate = rng.lognormal(mean=8, sigma=2, size=n)  # requests per hour
    total = rng.poisson(rate[:, None] * diurnal[None, :]).astype(np.float64)
    base_ratio = b * rng.uniform(0.0, 0.9, size=n)
    ratio = np.broadcast_to(base_ratio[:, None], (n, t)).copy()
    # Incidents: a quarter of the fleet had one, at a random hour, lasting 1..6 hours.
    hit = rng.random(n) < 0.25
    start = rng.integers(0, t, size=n)
    length = rng.integers(1, 7, size=n)
    severity = b * rng.uniform(5, 40, size=n)
    cols = hours[None, :]
    incident = hit[:, None] & (cols >= start[:, None]) & (cols < (start + length)[:, None])
    ratio = np.where(incident, np.minimum(severity[:, None], 1.0), ratio)
    bad = rng.binomial(total.astype(np.int64), np.clip(ratio, 0, 1)).astype(np.float64)
    # Gaps: 2% of the SLOs lost some intervals; 1% have no history at all.
    gaps = (rng.random(n) < 0.02)[:, None] & (rng.random((n, t)) < 0.1)
    bad[gaps] = np.nan
    total[gaps] = np.nan
    no_hist = rng.random(n) < 0.01
    windows = np.asarray(STANDARD_WINDOWS_S, dtype=np.int64)
    zeros = np.zeros(bad.shape[0])
    win_bad = window_sums(bad, zeros, 0.0, HOUR, windows)
    win_total = window_sums(total, zeros, 0.0, HOUR, windows)
    # Sub-hour windows: a share of the last hour (the controller queries these directly).
    for j, w in enumerate(windows.tolist()):
        if w < HOUR:
            win_bad[:, j] = bad[:, -1] * w / HOUR
            win_total[:, j] = total[:, -1] * w / HOUR
    comp_bad = np.nansum(bad, axis=1)
    comp_total = np.nansum(total, axis=1)
    bad[no_hist] = np.nan
    total[no_hist] = np.nan
    # 10% calendar months (started 20 days ago), 10% on a 28d window.
    window_s = np.full(n, 30.0 * DAY)
    kind = rng.random(n)
    window_s[kind < 0.1] = 28 * DAY
    period_start = np.where((kind >= 0.1) & (kind < 0.2), now - 20 * DAY, np.nan)
    period_end = np.where(np.isfinite(period_start), now + 11 * DAY, np.nan)
    budget_times = now - HOUR * np.arange(47, -1, -1, dtype=np.float64)
    budget_consumed = np.cumsum(rng.uniform(0, 0.01, size=(n, 48)), axis=1)
    return SloBatch(
        target=targets,
        windows_s=windows,
        bad=win_bad,
        total=win_total,
        compliance_bad=comp_bad,
        compliance_total=comp_total,
        window_s=window_s,
        now=now,
        min_events=np.ones(n),
        period_start=period_start,
        period_end=period_end,
        hist_bad=bad,
        hist_total=total,
        step_s=HOUR,
        budget_times=budget_times,
        budget_consumed=budget_consumed,
        dependency_bound=np.where(rng.random(n) < 0.3, 99.85, np.nan),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--slos", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    pinned = pin_one_core()
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {pinned}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.platform()}")
    batch = make_batch(args.slos)
    n, t = batch.hist_bad.shape
    rules = default_rules(30 * DAY)
    print(f"input: {n} SLOs, {batch.windows_s.size} burn windows, history T={t} x 1h")
    evaluate(batch, rules)  # warm-up: first-touch page faults
    numeric: list[float] = []
    rows: list[float] = []
    status: list[float] = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = evaluate(batch, rules)
        numeric.append(time.perf_counter() - started)
        started = time.perf_counter()
        results = list(result.results())
        rows.append(time.perf_counter() - started)
        started = time.perf_counter()
        for row in results:
            row.to_status()
        status.append(time.perf_counter() - started)

    def show(label: str, times: list[float]) -> None:
        med = statistics.median(times)
        print(
            f"{label:34s} median {med * 1e3:6.1f} ms  (min {min(times) * 1e3:.1f}, "
            f"max {max(times) * 1e3:.1f}; {med / n * 1e6:.2f} us per SLO)"
        )

    print(f"{args.runs} runs:")
    show("evaluate (all numeric outputs)", numeric)
    show("results() rows + messages", rows)
    show("to_status() dicts", status)
    risks, counts = np.unique(result.risk, return_counts=True)
    names = ("UNKNOWN", "SAFE", "OBSERVE", "DANGER", "FREEZE")
    mix = ", ".join(f"{names[int(r)]} {int(c)}" for r, c in zip(risks, counts, strict=True))
    methods = np.bincount(result.method, minlength=6).tolist()
    print(f"risk mix: {mix}")
    print(
        "forecast paths: "
        f"history {methods[2]}, calendar {methods[3]}, least-squares {methods[4]}, "
        f"steady-rate {methods[5]}, exhausted {methods[1]}, none {methods[0]}"
    )
    print("example:", results[0].message)
    verdict = "OK" if statistics.median(numeric) < 0.1 else "over target"
    print(f"target < 100 ms for the numeric part: {verdict}")


if __name__ == "__main__":
    main()
