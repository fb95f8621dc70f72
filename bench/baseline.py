"""The naive SLO evaluation slogate is measured against, run as its own process.

What the seeds describe and what many home-grown SLO exporters do: every tick, for every SLO,

- one raw instant query per burn window (5m, 30m, 1h, 2h, 6h, 1d, 3d), each an error ratio of
  two ``increase()`` over the window,
- one raw query over the whole compliance window (``increase()`` over 30d) for the budget,
- and one status write per SLO (a merge patch of the status subresource).

It uses the same :class:`~slogate.prometheus.client.PrometheusClient` as the operator (same
concurrency bound, asking for ``stats=all`` so Prometheus reports the samples each query loaded)
and the official Kubernetes client. Its budget per SLO is the exact ``increase()`` over the
compliance window, the reference slogate's status is compared with.

Run by the harness as ``python -m bench.baseline --input slos.json --kubeconfig ... --prometheus-url
...``; prints one JSON document with the tick's cost and every SLO's exact budget.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from slogate.core.timetext import rfc3339
from slogate.prometheus.client import PrometheusClient, PrometheusConfig, QueryResult
from slogate.prometheus.errors import PrometheusError

GROUP, VERSION, PLURAL = "slogate.dev", "v1alpha1", "servicelevelobjectives"
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class BaselineSlo:
    """One ratio SLO as the baseline sees it; ``at`` is the instant to evaluate (seconds)."""

    namespace: str
    name: str
    errors: str
    total: str
    target: float
    window: str = "30d"
    at: float | None = None


def ratio_query(errors: str, total: str, window: str) -> str:
    """The error ratio over ``window``: one raw query, no recording rules, no batching."""
    return f"(sum(increase({errors}[{window}])) or vector(0)) / sum(increase({total}[{window}]))"


def queries_for(slo: BaselineSlo) -> list[tuple[str, str]]:
    """``(window, promql)`` for every query the baseline sends for ``slo`` in one tick."""
    return [(w, ratio_query(slo.errors, slo.total, w)) for w in (*BURN_WINDOWS, slo.window)]


def status_for(slo: BaselineSlo, ratios: dict[str, float | None], at: float) -> dict[str, Any]:
    """The status the baseline writes: SLI, budget and burn rates (null without traffic)."""
    budget = 1 - slo.target / 100
    compliance = ratios.get(slo.window)
    burn: dict[str, float | None] = {}
    for w in BURN_WINDOWS:
        r = ratios.get(w)
        burn[w] = None if r is None else round(r / budget, 4)
    consumed = None if compliance is None else compliance / budget
    return {
        "lastEvaluationTime": rfc3339(at),
        "sli": None if compliance is None else round(1 - compliance, 6),
        "errorBudget": {
            "consumed": None if consumed is None else round(consumed, 6),
            "remaining": None if consumed is None else round(1 - consumed, 6),
        },
        "burnRates": burn,
    }


@dataclass
class TickResult:
    slos: int = 0
    requests: int = 0
    failed_requests: int = 0
    samples: int = 0
    patches: int = 0
    failed_patches: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_kib: int = 0
    # [namespace, name, at, exact consumed fraction or None] per SLO
    budgets: list[tuple[str, str, float, float | None]] = field(default_factory=list)


def _value(result: QueryResult) -> float | None:
    if not result.samples:
        return None
    value = result.samples[0].value
    return value if value == value and abs(value) != float("inf") else None


async def run_tick(
    slos: Sequence[BaselineSlo],
    prom: PrometheusClient,
    custom: k8s.CustomObjectsApi,
    write_concurrency: int = 8,
) -> TickResult:
    """One naive tick over every SLO; returns its cost and the exact budgets."""
    out = TickResult(slos=len(slos))
    writes = asyncio.Semaphore(write_concurrency)
    now = time.time()
    cpu0, wall0 = time.process_time(), time.perf_counter()

    async def one(slo: BaselineSlo) -> None:
        at = slo.at if slo.at is not None else now
        ratios: dict[str, float | None] = {}

        async def ask(window: str, query: str) -> None:
            try:
                result = await prom.instant(query, at, stats=True)
            except PrometheusError:
                out.failed_requests += 1
                ratios[window] = None
                return
            out.samples += result.total_queryable_samples or 0
            ratios[window] = _value(result)

        await asyncio.gather(*(ask(w, q) for w, q in queries_for(slo)))
        status = status_for(slo, ratios, at)
        consumed = status["errorBudget"]["consumed"]
        out.budgets.append((slo.namespace, slo.name, at, consumed))
        async with writes:
            try:
                await asyncio.to_thread(
                    functools.partial(
                        custom.patch_namespaced_custom_object_status,
                        GROUP,
                        VERSION,
                        slo.namespace,
                        PLURAL,
                        slo.name,
                        {"status": status},
                    )
                )
                out.patches += 1
            except Exception:
                out.failed_patches += 1

    before = prom.request_count
    await asyncio.gather(*(one(s) for s in slos))
    out.requests = prom.request_count - before
    out.wall_s = time.perf_counter() - wall0
    out.cpu_s = time.process_time() - cpu0
    out.peak_rss_kib = _peak_rss_kib()
    return out


def _peak_rss_kib() -> int:
    """VmHWM: unlike ``ru_maxrss`` it is not inherited from the (large) parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def _main(args: argparse.Namespace, slos: list[BaselineSlo]) -> TickResult:
    k8s_config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    custom = k8s.CustomObjectsApi(k8s.ApiClient())
    config = PrometheusConfig(url=args.prometheus_url, timeout_s=120, retries=1)
    async with PrometheusClient(config) as prom:
        return await run_tick(slos, prom, custom, args.write_concurrency)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one tick of the naive SLO evaluation")
    parser.add_argument("--input", required=True, help="JSON list of BaselineSlo fields")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--prometheus-url", required=True)
    parser.add_argument("--write-concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    slos = [BaselineSlo(**row) for row in json.loads(Path(args.input).read_text())]
    result = asyncio.run(_main(args, slos))
    json.dump(asdict(result), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
