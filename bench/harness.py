"""``make bench``: slogate measured at scale, side by side with a naive baseline, in one run.

    .venv/bin/python -m bench.harness            # full: 100, 1,000 and 5,000 SLOs (~20 min)
    .venv/bin/python -m bench.harness --quick    # 100 and 1,000 SLOs, shorter load runs

Starts real etcd + kube-apiserver, a real Prometheus with 31 days of backfilled history, the real
``slogate controller`` and ``slogate webhook`` processes, and writes ``docs/benchmarks.md``
(machine, command, date, one table per section, targets with pass/fail). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import bench_admission as adm
from bench import bench_detection as det
from bench import bench_rules as rules
from bench import bench_scale as scale
from bench.report import (
    Section,
    Target,
    bucket_deltas,
    fmt,
    histogram_quantile,
    ms,
    ratio,
    render_document,
    targets_table,
)
from bench.world import (
    Api,
    exporter_spec,
    live_history,
    machine,
    make_services,
    namespace_of,
    slo_name,
    slo_status,
    story_series,
)
from localenv.controlplane import ControlPlane
from localenv.faultproxy import FaultProxy
from localenv.objects import deployment, release_gate
from localenv.processes import Process, cpu_seconds, free_port
from localenv.prometheus import PrometheusServer, blocks_from_openmetrics, openmetrics_text
from localenv.roles import metric_value
from slogate.core.timetext import rfc3339

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "crds"
DOC = REPO / "docs" / "benchmarks.md"
SERVICES = 50
NAMESPACES = 50
INTERVAL_S = 30.0
HEARTBEAT_S = 300.0
# Stories whose error ratio is constant over the whole month: every number slogate shows stays
# the same, so any write beyond the heartbeat is noise.
CONSTANT_KINDS = ("healthy", "exhausted")


class Run:
    """Results of every section, and the sections' failures (a failed section is reported, the
    others still run)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.data: dict[str, Any] = {}
        self.failures: dict[str, str] = {}

    def section(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception:
            self.failures[name] = traceback.format_exc()
            print(self.failures[name], file=sys.stderr, flush=True)
            return None
        finally:
            print(f"=== {name}: {time.perf_counter() - t0:.1f}s ===", flush=True)
        return value


# --- setup -----------------------------------------------------------------------------------


def backfill(
    prom: PrometheusServer, work: Path, ports: dict[str, int]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Write every service's month into Prometheus, timed by stage; returns the stats and the
    exporter spec that continues the stories live from where the history ends."""
    t0 = time.perf_counter()
    end = time.time()
    stories = make_services(SERVICES, end)
    live = live_history(end)
    targets = {k: f"127.0.0.1:{p}" for k, p in ports.items()}
    series = [s for story in stories for s in story_series(story, targets["services"])]
    series += story_series(live, targets["live"])
    samples = sum(len(s.values) for s in series)
    spec = {
        "ports": ports,
        "services": [exporter_spec(s) for s in stories],
        "live": [exporter_spec(live)],
    }
    t1 = time.perf_counter()
    source = work / "backfill.om"
    source.write_text(openmetrics_text(series))
    del series
    t2 = time.perf_counter()
    blocks_from_openmetrics(source, prom.data_dir)
    t3 = time.perf_counter()
    size = source.stat().st_size
    source.unlink()
    prom.restart()
    t4 = time.perf_counter()
    kinds: dict[str, int] = {}
    for story in stories:
        kinds[story.kind] = kinds.get(story.kind, 0) + 1
    stats = {
        "series": float(2 * (len(stories) + 1)),
        "samples": float(samples),
        "bytes": float(size),
        "generate_s": t1 - t0,
        "render_s": t2 - t1,
        "promtool_s": t3 - t2,
        "restart_s": t4 - t3,
        "total_s": t4 - t0,
        **{f"kind_{k}": float(v) for k, v in kinds.items()},
    }
    return stats, spec


def scrape_configs(ports: dict[str, int]) -> list[dict[str, Any]]:
    """The exporter's two groups: the scale services at the history's resolution (60 s), the
    live service every 5 s. ``honor_labels`` keeps the exporter's ``job`` label (one per
    service), so the scraped samples continue the backfilled series."""
    return [
        {
            "job_name": f"bench-{group}",
            "honor_labels": True,
            "scrape_interval": interval,
            "static_configs": [{"targets": [f"127.0.0.1:{ports[group]}"]}],
        }
        for group, interval in (("services", "60s"), ("live", "5s"))
    ]


def run_bench_math(quick: bool) -> str:
    args = ["--slos", "10000", "--runs", "3" if quick else "7"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_math.py"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=600,
    )
    return proc.stdout + (
        f"\n(exit {proc.returncode})\n{proc.stderr[-2000:]}" if proc.returncode else ""
    )


# --- sections --------------------------------------------------------------------------------


def scale_section(
    run: Run,
    env: scale.Env,
    sizes: list[int],
    ticks: dict[int, int],
    exporter: Any,
    state: Path,
) -> list[dict[str, Any]]:
    results = []
    largest = max(sizes)
    for n in sizes:
        during = None
        extra = 0
        if n == largest:
            env.api.create_many(det.live_manifests())
            extra = 1

            def during(ctl: Any, res: scale.SizeResult) -> None:
                hook = det.start_webhook(env.cp.kubeconfig, env.work / "detect-hook")
                try:
                    res.detection = det.measure(env.api, env.prom, exporter, state, hook)
                except Exception:
                    res.detection = {"error": traceback.format_exc()}
                finally:
                    hook.stop()

        print(f"--- {n} SLOs", flush=True)
        res = scale.run_size(env, n, ticks[n], during, extra_slos=extra)
        print(json.dumps({"startup": res.startup, "steady": res.steady}, default=str)[:2000])
        statuses = scale.slogate_budgets(env, n)
        try:
            base = scale.run_baseline(env, n, statuses)
            budgets = base.pop("budgets")
            res.baseline = base
            res.budgets = scale.compare_budgets(statuses, budgets)
        except Exception:
            res.baseline = {"error": traceback.format_exc()}
        print(json.dumps({"baseline": res.baseline, "budgets": res.budgets}, default=str)[:2000])
        results.append(scale.to_json(res))
        run.data["scale"] = results
    return results


def admission_section(
    run: Run, env: scale.Env, gates: int, rates: list[int], seconds: float, rounds: int
) -> dict[str, Any]:
    api = env.api
    n_slos = env.created
    g = min(gates, n_slos)
    now = time.time()
    targets: list[adm.GateTarget] = []
    gate_docs = []
    statuses = []
    for k in range(g):
        ns = namespace_of(k, env.namespaces)
        kind = "deny" if k % 20 < 1 else "warn" if k % 20 < 3 else "ok"
        app = f"app-{k:04d}"
        gate_docs.append(release_gate(f"gate-{k:04d}", ns, app, [slo_name(k)]))
        statuses.append(("servicelevelobjectives", ns, slo_name(k), slo_status(kind, now)))
        targets.append(adm.GateTarget(ns, app, "allow" if kind == "ok" else kind))
    # End to end: a gated Deployment and one in the operator's namespace (never sent to the
    # webhook), both updated through the API server.
    e2e_docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "e2e"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "slogate-system"}},
        {
            "apiVersion": "slogate.dev/v1alpha1",
            "kind": "ServiceLevelObjective",
            "metadata": {"name": "web", "namespace": "e2e"},
            "spec": {
                "service": "web",
                "target": 99.9,
                "indicator": {"ratio": {"errors": "e_total", "total": "t_total"}},
            },
        },
        release_gate("web", "e2e", "web", ["web"]),
        deployment("web", "e2e"),
        deployment("web", "slogate-system"),
    ]
    t0 = time.perf_counter()
    for doc in e2e_docs:
        api.create(doc)
    api.create_many(gate_docs)
    replicasets = adm.current_replicasets(targets)
    api.create_many(replicasets)
    listed = api.http.get("/apis/apps/v1/replicasets")
    listed.raise_for_status()
    stored = adm.stored_templates(listed.json()["items"])
    statuses.append(("servicelevelobjectives", "e2e", "web", slo_status("ok", now)))
    api.patch_status_many(statuses)
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    hook = det.start_webhook(env.cp.kubeconfig, env.work / "admission-hook")
    ready_s = time.perf_counter() - t1
    # After /readyz the webhook's watches still deliver their initial listing (it indexed the
    # same objects already); measure from when that catch-up is over, and report how long it was.
    settle_s = wait_idle(hook.pid)
    out: dict[str, Any] = {
        "slos": n_slos + 1,
        "gates": g + 1,
        "gate_mix": {k: sum(1 for t in targets if t.kind == k) for k in ("allow", "warn", "deny")},
        "setup_s": setup_s,
        "webhook_ready_s": ready_s,
        "webhook_settle_s": settle_s,
        "replicasets": len(replicasets),
        "runs": [],
    }
    try:
        ctx = ssl.create_default_context(cadata=hook.ca.cert_pem.decode())
        namespaces = sorted({t.namespace for t in targets})
        runs = [(rate, "mixed", adm.MIX) for rate in rates] + [(200, "no denials", adm.NO_DENY)]
        for rate, label, mix in runs:
            warm = adm.plan_requests(
                targets, namespaces, rate, seed=rate + 1, mix=mix, stored=stored
            )
            asyncio.run(adm.open_loop(hook.url, ctx, warm, rate))
            reqs = adm.plan_requests(
                targets, namespaces, int(rate * seconds), seed=rate, mix=mix, stored=stored
            )
            m0, c0 = hook.metrics_text(), cpu_seconds(hook.pid)
            w0 = time.perf_counter()
            res = asyncio.run(adm.open_loop(hook.url, ctx, reqs, rate))
            wall = time.perf_counter() - w0
            c1 = cpu_seconds(hook.pid)
            m1 = hook.metrics_text()
            name = "slogate_admission_duration_seconds"
            deltas = bucket_deltas(adm.histogram_buckets(m1, name), adm.histogram_buckets(m0, name))
            summary = adm.summarize(res)
            summary["mix"] = label
            summary["handler"] = {
                "count": deltas[-1][1] if deltas else 0.0,
                "p50": histogram_quantile(deltas, 0.5),
                "p99": histogram_quantile(deltas, 0.99),
                "p99_bucket": next((le for le, c in deltas if c >= 0.99 * deltas[-1][1]), None),
                "buckets": deltas,
            }
            summary["decisions"] = {
                d: metric_value(m1, "slogate_admission_decisions_total", decision=d)
                - metric_value(m0, "slogate_admission_decisions_total", decision=d)
                for d in ("allow", "warn", "deny", "error")
            }
            summary["rollback_checks"] = {
                src: metric_value(m1, "slogate_rollback_checks_total", source=src)
                - metric_value(m0, "slogate_rollback_checks_total", source=src)
                for src in ("index", "api")
            }
            summary["webhook_cores"] = (c1 - c0) / wall
            out["runs"].append(summary)
            print(json.dumps({k: v for k, v in summary.items() if k != "handler"}, default=str))
            time.sleep(2)
        out["e2e"] = e2e(env, hook, rounds)
        print(json.dumps(out["e2e"], default=str)[:1500])
    finally:
        hook.stop()
    run.data["admission"] = out
    return out


def wait_idle(pid: int, below_cores: float = 0.05, timeout_s: float = 120.0) -> float:
    """Seconds until process ``pid`` uses less than ``below_cores`` over one second."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - c0 < below_cores:
            break
    return time.perf_counter() - t0


def e2e(env: scale.Env, hook: Any, rounds: int) -> dict[str, Any]:
    api = env.api
    config_url = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
    gated = "/apis/apps/v1/namespaces/e2e/deployments/web"
    excluded = "/apis/apps/v1/namespaces/slogate-system/deployments/web"
    http = api.http
    http.delete(f"{config_url}/slogate")
    time.sleep(2)
    adm.patch_latencies(http, [gated, excluded], 10, "warm-a")
    without = adm.patch_latencies(http, [gated, excluded], rounds, "a")
    resp = http.post(config_url, json=hook.configuration("Ignore", "slogate-system"))
    resp.raise_for_status()
    # A new configuration takes a moment to reach the API server's admission chain.
    deadline = time.monotonic() + 30
    before = metric_value(hook.metrics_text(), "slogate_admission_decisions_total")
    called = False
    while time.monotonic() < deadline and not called:
        adm.patch_latencies(http, [gated], 1, f"probe-{time.monotonic_ns()}")
        called = metric_value(hook.metrics_text(), "slogate_admission_decisions_total") > before
        time.sleep(0.2)
    if not called:
        raise RuntimeError("the API server never called the webhook")
    adm.patch_latencies(http, [gated, excluded], 10, "warm-b")
    before = metric_value(hook.metrics_text(), "slogate_admission_decisions_total")
    with_hook = adm.patch_latencies(http, [gated, excluded], rounds, "b")
    calls = metric_value(hook.metrics_text(), "slogate_admission_decisions_total") - before
    http.delete(f"{config_url}/slogate")

    def stats(values: list[float]) -> dict[str, float]:
        from bench.report import percentile

        return {
            "count": float(len(values)),
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values),
        }

    return {
        "rounds": rounds,
        "webhook_calls": calls,
        "gated_without": stats(without[gated]),
        "gated_with": stats(with_hook[gated]),
        "excluded_without": stats(without[excluded]),
        "excluded_with": stats(with_hook[excluded]),
    }


# --- the document ------------------------------------------------------------------------------


def _per_tick(res: dict[str, Any], key: str) -> float:
    st = res["steady"]
    return float(st[key]) / st["ticks"]


def _cores(res: dict[str, Any]) -> float:
    st = res["steady"]
    return float(st["cpu_s"]) / st["nominal_s"]


def build_document(run: Run, meta: dict[str, str]) -> str:
    sections: list[Section] = []
    scale_rows = run.data.get("scale") or []
    admission = run.data.get("admission") or {}
    targets = evaluate_targets(run, scale_rows, admission)
    summary = Section("Targets (issues 8 and 14)")
    headers, rows = targets_table(targets)
    summary.table("", headers, rows)
    if run.failures:
        summary.notes.append("Sections that failed in this run: " + ", ".join(sorted(run.failures)))
    sections.append(summary)
    sections.append(setup_section(run))
    if scale_rows:
        sections.extend(scale_sections(scale_rows))
    detection = next((r["detection"] for r in scale_rows if r.get("detection")), None)
    if detection:
        sections.append(detection_section(detection, scale_rows[-1]["n"]))
    if admission:
        sections.extend(admission_sections(admission))
    if run.data.get("rules"):
        sections.append(rules_section(run.data["rules"]))
    if run.data.get("math"):
        sections.append(
            Section(
                "SLO math alone (bench/bench_math.py)",
                intro="The numeric core over 10,000 SLOs with 30-day hourly histories, pinned "
                "to one core:",
                code=run.data["math"],
            )
        )
    for name, tb in run.failures.items():
        sections.append(Section(f"Failure: {name}", code=tb[-3000:]))
    preface = (
        "Generated by `make bench` (`python -m bench.harness`); every number below comes from "
        "the run described in this table, against real processes: etcd + kube-apiserver, "
        "Prometheus 2.42, and the `slogate controller` / `slogate webhook` processes. The "
        "machine is a noisy 2-core VM shared by all of them and by the load generator: compare "
        "ratios within one run (slogate vs. the baseline, with vs. without the webhook) rather "
        "than absolute numbers across runs. How it works and how to read it: `bench/README.md`."
    )
    return render_document("slogate benchmarks", meta, preface, sections)


def rules_section(result: dict[str, Any]) -> Section:
    sec = Section(
        "Prometheus rule evaluation (bench/bench_rules.py)",
        intro=(
            f"slogate's generated rules in one Prometheus with {rules.SERVICES} services of "
            f"{rules.PODS * 2} series each (pods x status codes, scraped every "
            f"{rules.SCRAPE_S} s) and 30 days of recorded 5-minute rates "
            f"({fmt(result['samples'])} samples, backfilled in {result['setup_s']:.0f} s). "
            "Each SLO has the default 30-day window, so its long windows are 6h, 1d, 3d and "
            "30d. Variants, one after the other on the same data: the long windows' records as "
            "generated (derived from the recorded 5-minute rates), the same records read from "
            f"the raw series, and whole groups as generated (up to {fmt(rules.WHOLE_MAX_N)} "
            "SLOs). "
            f"whole groups as generated. Groups run every {rules.EVAL_S} s while measured."
        ),
    )
    sec.table(
        "",
        ("SLOs", "variant", "sum of group durations", "Prometheus CPU a round", "missed"),
        [
            (
                fmt(r["n"]),
                r["variant"],
                f"{r['group_seconds']:.2f} s",
                f"{r['cpu_per_round']:.2f} s",
                fmt(r["missed"]),
            )
            for r in result["rows"]
        ],
    )
    sec.notes.append(
        "Deriving saves about (series per selector) x (scrape rate / rule rate): it reads one "
        "recorded sample per SLO and interval instead of every raw sample of every series. With "
        "a single series per selector and a scrape as slow as the rule interval it saves "
        "nothing; with hundreds of series (Istio, histograms) it saves far more than here."
    )
    return sec


def evaluate_targets(
    run: Run, scale_rows: list[dict[str, Any]], admission: dict[str, Any]
) -> list[Target]:
    out: list[Target] = []
    if run.data.get("rules"):
        for n, (by_time, by_cpu) in rules.ratios(run.data["rules"]).items():
            out.append(
                Target(
                    f"Prometheus rule evaluation, long windows, {n:,} SLOs",
                    "derived at least 10x cheaper than raw",
                    f"{by_time:.1f}x less group time, {by_cpu:.1f}x less CPU",
                    by_time >= 10.0,
                )
            )
    if scale_rows:
        big = scale_rows[-1]
        n = big["n"]
        cores = _cores(big)
        is_5k = n >= 5000
        out.append(
            Target(
                "operator CPU, 5,000 SLOs every 30 s",
                "< 1 core on average",
                f"{cores:.2f} cores at {n:,} SLOs"
                + ("" if is_5k else f" (projected to 5,000: {cores * 5000 / n:.2f})"),
                cores < 1.0 if is_5k else None,
            )
        )
        sample_ratios = [
            (
                r["n"],
                r["baseline"].get("samples", 0) / (r["steady"]["samples"] / r["steady"]["ticks"]),
            )
            for r in scale_rows
            if r["steady"].get("samples") and "samples" in r["baseline"]
        ]
        if sample_ratios:
            worst = min(x for _, x in sample_ratios)
            out.append(
                Target(
                    "samples loaded per tick vs baseline",
                    ">= 20x fewer",
                    ", ".join(f"{x:,.1f}x at {k:,}" for k, x in sample_ratios),
                    worst >= 20,
                )
            )
        budgets = [r["budgets"] for r in scale_rows if r.get("budgets")]
        if budgets:
            compared = sum(b["compared"] for b in budgets)
            within = sum(b["within"] for b in budgets)
            worst_abs = max(b["max_abs"] for b in budgets)
            out.append(
                Target(
                    "budget = exact 30d increase()",
                    "within 0.1% of budget",
                    f"{within:,}/{compared:,} SLO evaluations within; max difference "
                    f"{worst_abs * 100:.3f}% of budget",
                    within == compared and compared > 0,
                )
            )
        st = big["steady"]
        per5 = st["slo_writes"] / (n + (1 if big.get("detection") else 0)) / st["nominal_s"] * 300
        kinds = (big.get("writes") or {}).get("per_slo_per_5min") or {}
        steady_kinds = [kinds[k] for k in CONSTANT_KINDS if k in kinds]
        long_enough = st["nominal_s"] >= HEARTBEAT_S
        if steady_kinds:
            worst = max(k["max"] for k in steady_kinds)
            mean = sum(k["mean"] * k["slos"] for k in steady_kinds) / sum(
                k["slos"] for k in steady_kinds
            )
            out.append(
                Target(
                    "status patches when nothing changes",
                    "<= 1 per SLO per 5 min",
                    f"SLOs whose data does not change ({', '.join(CONSTANT_KINDS)} stories): "
                    f"mean {mean:.2f}, max {worst:.2f} per SLO per 5 min; all SLOs: {per5:.2f} "
                    f"(at {n:,} SLOs over {st['ticks']} ticks, {st['nominal_s']:.0f} s"
                    + (")" if long_enough else "; window shorter than a heartbeat)"),
                    worst <= 1.0 if long_enough else None,
                )
            )
        hwm = big["memory"].get("VmHWM_end") or big["memory"].get("VmHWM", 0)
        out.append(
            Target(
                "operator RSS at 5,000 SLOs",
                "< 300 MiB",
                f"peak {hwm / 1024:.0f} MiB at {n:,} SLOs",
                hwm / 1024 < 300 if is_5k else None,
            )
        )
        det_data = big.get("detection") or {}
        after = det_data.get("seconds_after_visible") or {}
        if "gate_block" in after:
            out.append(
                Target(
                    "fast burn blocks the gate",
                    "within 2 evaluation intervals (60 s) of Prometheus seeing it",
                    f"gate BLOCK {after['gate_block']:.1f} s, webhook refuses "
                    f"{after.get('webhook_deny', float('nan')):.1f} s after",
                    after["gate_block"] <= 2 * INTERVAL_S,
                )
            )
        elif det_data:
            out.append(Target("fast burn blocks the gate", "<= 60 s", "not observed", False))
    for r in admission.get("runs", []):
        if r["rate"] == 200 and r.get("mix") == "mixed":
            h = r["handler"]
            out.append(
                Target(
                    "webhook handler p99 at 200/s",
                    "< 5 ms",
                    f"handler p99 {ms(h['p99'])} (histogram bucket <= {ms(h['p99_bucket'])}); "
                    f"client-side p99 {ms(r['all']['p99'])}, errors {r['errors']}",
                    h["p99_bucket"] is not None and h["p99_bucket"] <= 0.005,
                )
            )
    e = admission.get("e2e")
    if e:
        over99 = e["gated_with"]["p99"] - e["excluded_with"]["p99"]
        over50 = e["gated_with"]["p50"] - e["excluded_with"]["p50"]
        before99 = e["gated_with"]["p99"] - e["gated_without"]["p99"]
        out.append(
            Target(
                "API-server update overhead from the webhook",
                "< 10 ms p99",
                f"p99 {ms(over99)}, p50 {ms(over50)} (vs. the interleaved excluded Deployment); "
                f"p99 {ms(before99)} vs. the same Deployment before registering",
                over99 < 0.010,
            )
        )
    return out


def setup_section(run: Run) -> Section:
    sec = Section("Setup")
    b = run.data.get("backfill")
    if b:
        sec.intro = (
            f'{SERVICES} synthetic services (two counters each: `code="500"` and '
            f'`code="200"`) with 31 days of history at one sample per minute, plus the live '
            f"service's history; SLO *i* reads service *i* mod {SERVICES}, and SLOs are spread "
            f"over {NAMESPACES} namespaces. Story mix: "
            + ", ".join(f"{k[5:]} {int(v)}" for k, v in b.items() if k.startswith("kind_"))
            + " (healthy: constant error ratio; noisy: healthy with Poisson-distributed counts, "
            "as real traffic is; incident: a 1-4 h incident 2-28 days ago; slowburn: 3.5x for "
            "two days, a ticket rule fires; exhausted: budget spent). After the backfill an "
            "exporter continues every counter live (scraped every 60 s, `honor_labels`), so each "
            "series is one unbroken counter."
        )
        sec.table(
            "Backfill (one-time, before anything is measured)",
            ("series", "samples", "OpenMetrics", "numpy", "render", "promtool", "restart", "total"),
            [
                (
                    fmt(int(b["series"])),
                    fmt(int(b["samples"])),
                    f"{b['bytes'] / 1e6:.0f} MB",
                    f"{b['generate_s']:.1f} s",
                    f"{b['render_s']:.1f} s",
                    f"{b['promtool_s']:.1f} s ({b['samples'] / b['promtool_s'] / 1e6:.2f} M/s)",
                    f"{b['restart_s']:.1f} s",
                    f"{b['total_s']:.1f} s",
                )
            ],
        )
        sec.notes.append(
            "promtool's `create-blocks-from openmetrics` is the bottleneck of the setup (it "
            "parses text on about one core); the rendering is Python."
        )
    return sec


def scale_sections(rows: list[dict[str, Any]]) -> list[Section]:
    steady = Section(
        "Scale: steady state, per evaluation tick",
        intro=(
            "All SLOs are ratio SLOs on a 30d window evaluated every 30 s (the default). One "
            "tick of slogate is the measured window divided by the number of full ticks in it "
            "(every SLO evaluated together); CPU is the controller process's user + system time "
            "from /proc over the window (kopf, watches, the evaluator, the status writes), "
            "Prometheus requests are counted by a FaultProxy in pass mode, samples are "
            "Prometheus's own `stats=all` totalQueryableSamples of the recorded queries "
            "replayed. The baseline (`bench/baseline.py`, a separate process) runs one tick over "
            "the same SLOs right after, with the controller stopped: 8 raw instant queries per "
            "SLO (7 burn windows + the 30d budget) and one status patch per SLO."
        ),
    )
    per_tick = []
    for r in rows:
        st, b = r["steady"], r["baseline"]
        t = st["ticks"]
        n = r["n"]
        if "error" in b:
            b = {}
        per_tick.append(
            (
                fmt(n),
                f"{st['requests'] / t:,.1f}",
                fmt(b.get("requests")),
                ratio(st["requests"] / t, b.get("requests", float("nan"))),
                fmt(int(st["samples"] / t)),
                fmt(b.get("samples")),
                ratio(st["samples"] / t, b.get("samples", float("nan"))),
                f"{st['slo_writes'] / t:,.1f}",
                fmt(b.get("patches")),
                f"{st['cpu_s'] / t:.2f} s",
                f"{b['cpu_s']:.1f} s" if b else "-",
                f"{st['tick_wall_mean_s']:.2f} s (max {st['tick_wall_max_s']:.2f})",
                f"{st.get('prometheus_seconds', float('nan')) / t:.2f} s",
                f"{b['wall_s']:.1f} s" if b else "-",
            )
        )
    steady.table(
        "Per tick: slogate vs baseline",
        (
            "SLOs",
            "Prom requests",
            "baseline",
            "ratio",
            "samples loaded",
            "baseline",
            "ratio",
            "status patches",
            "baseline",
            "operator CPU",
            "baseline CPU",
            "tick wall",
            "of it waiting for Prometheus",
            "baseline wall",
        ),
        per_tick,
    )
    res_rows = []
    for r in rows:
        st = r["steady"]
        n = r["n"]
        mem = r["memory"]
        res_rows.append(
            (
                fmt(n),
                f"{st['ticks']} ticks ({st['window_s']:.0f} s)",
                f"{_cores(r):.3f}",
                f"{st['slo_writes'] / n / st['nominal_s'] * 300:.2f}",
                fmt(st["status_patches_apiserver"]),
                f"{mem.get('VmRSS', 0) / 1024:.0f} MiB",
                f"{(mem.get('VmHWM_end') or mem.get('VmHWM', 0)) / 1024:.0f} MiB",
                f"{r['baseline'].get('peak_rss_kib', 0) / 1024:.0f} MiB",
                f"{r['scrape'].get('cpu_s', 0):.2f} s CPU, {int(r['scrape'].get('lines', 0)):,} "
                "lines",
            )
        )
    steady.table(
        "Operator resources",
        (
            "SLOs",
            "window",
            "CPU cores (avg)",
            "SLO patches per SLO per 5 min",
            "status PATCHes seen by API server",
            "RSS",
            "peak RSS",
            "baseline peak RSS",
            "one /metrics scrape",
        ),
        res_rows,
    )
    write_rows = []
    for r in rows:
        w = r.get("writes") or {}
        kinds = w.get("per_slo_per_5min") or {}
        if not kinds:
            continue
        write_rows.append(
            (
                fmt(r["n"]),
                f"{w['window_s']:.0f} s",
                fmt(w["total"]),
                fmt(w["heartbeats"]),
                *(
                    f"{kinds[k]['mean']:.2f} (max {kinds[k]['max']:.2f})" if k in kinds else "-"
                    for k in ("healthy", "exhausted", "noisy", "incident", "slowburn")
                ),
                ", ".join(f"{k} {v}" for k, v in list(w["fields"].items())[:6]),
            )
        )
    if write_rows:
        steady.table(
            "Status writes in the window, per SLO per 5 minutes, by story (from a watch on "
            "every SLO)",
            (
                "SLOs",
                "window",
                "writes",
                "heartbeats (nothing visible changed)",
                "healthy",
                "exhausted",
                "noisy",
                "incident",
                "slowburn",
                "fields the writes changed (count)",
            ),
            write_rows,
        )
        steady.notes.append(
            "healthy and exhausted stories have a constant error ratio all month, so every "
            "number slogate shows for them is constant: their writes should be heartbeats only "
            f"(one per {HEARTBEAT_S:.0f} s). incident and slowburn SLOs have numbers that "
            "really move (a 3d window sliding over an incident, a budget being eaten), so "
            "their writes are expected. noisy SLOs show what real traffic does: Poisson noise "
            "moves the short-window burn rates (shown to 2 decimals) on most ticks. A window "
            "shorter than the heartbeat cannot show the heartbeat, and a single write in a "
            "short window projects to several per 5 minutes."
        )
    big = rows[-1]
    heavy = sorted(big["tick_log"], key=lambda t: -t["s"])[:3]
    steady.notes.append(
        f"Ticks at {big['n']:,} SLOs (evaluated, requests, writes, seconds), slowest first: "
        + "; ".join(
            f"{int(t['evaluated'])}, {int(t['requests'])}, {int(t['writes'])}, {t['s']:.2f} s"
            for t in heavy
        )
    )
    for r in rows:
        if r["baseline"].get("failed_requests"):
            steady.notes.append(
                f"baseline at {r['n']:,}: {r['baseline']['failed_requests']} failed requests"
            )
    startup = Section(
        "Scale: one-time cost of a controller start (history fill)",
        intro=(
            "From starting the controller process until every SLO has a status: kopf's "
            "start-up and initial listing (it writes nothing to the SLOs), one range query per "
            "10 SLOs filling 30 days of hourly increases, the first short-window queries and "
            "one status write per SLO. Samples of the range queries are replayed on an evenly "
            "spaced subset and scaled."
        ),
    )
    startup.table(
        "",
        (
            "SLOs",
            "wall",
            "CPU",
            "Prom requests (range)",
            "samples loaded",
            "status PATCHes",
            "other SLO PATCHes (kopf)",
            "RSS after",
        ),
        [
            (
                fmt(r["n"]),
                f"{r['startup']['wall_s']:.1f} s",
                f"{r['startup']['cpu_s']:.1f} s",
                f"{r['startup']['requests']:,} ({r['startup']['range_requests']:,})",
                fmt(int(r["startup"]["samples"])),
                fmt(r["startup"]["status_patches"]),
                fmt(r["startup"]["object_patches"]),
                f"{r['startup']['rss_kib'] / 1024:.0f} MiB",
            )
            for r in rows
        ],
    )
    budgets = Section(
        "Scale: budgets agree with the exact 30d increase()",
        intro=(
            "For every SLO, slogate's `status.errorBudget.consumed` against the baseline's "
            "exact `increase()` over 30 days, evaluated by the baseline at the instant of "
            "slogate's `lastEvaluationTime` (so both describe the same moment). Differences are "
            "in budget fractions: 0.1% of the budget is 0.001."
        ),
    )
    brows = []
    for r in rows:
        b = r.get("budgets") or {}
        if not b:
            continue
        worst = b["worst"][0] if b["worst"] else {}
        brows.append(
            (
                fmt(r["n"]),
                fmt(b["compared"]),
                fmt(b["within"]),
                f"{b['max_abs'] * 100:.4f}%",
                f"{b['mean_abs'] * 100:.4f}%",
                f"{worst.get('slo', '-')}: {worst.get('slogate', 0):.4f} vs "
                f"{worst.get('exact', 0):.4f}",
            )
        )
    budgets.table(
        "",
        ("SLOs", "compared", "within 0.1%", "max |diff|", "mean |diff|", "worst"),
        brows,
    )
    return [steady, startup, budgets]


def detection_section(d: dict[str, Any], n: int) -> Section:
    sec = Section(
        "Detection latency: a fast burn to BLOCK",
        intro=(
            f"A live exporter (scraped every 5 s) with 31 days of healthy history starts "
            f"failing every request, while the controller evaluates {n:,} other SLOs in the "
            "same ticks (interval 30 s). The gate blocks on `FREEZE` (the page rule, 1h and 5m "
            'burn above 14.4). "Prometheus sees it" is the first moment Prometheus\'s own data '
            "makes that rule true (polled every second by the harness)."
        ),
    )
    if "error" in d:
        sec.code = d["error"]
        return sec
    after_err = d.get("seconds_after_errors", {})
    after_vis = d.get("seconds_after_visible", {})
    names = {
        "scraped": "Prometheus scraped the first errors",
        "visible": "Prometheus data makes the page rule true",
        "slo_evaluated": "evaluation that found it (SLO lastEvaluationTime)",
        "slo_freeze": "SLO status shows FREEZE",
        "webhook_deny": "webhook refuses a gated rollout",
        "gate_block": "gate status says BLOCK",
    }
    sec.table(
        "",
        ("stage", "seconds after errors start", "seconds after Prometheus sees it"),
        [
            (
                names.get(k, k),
                f"{v:.1f}",
                f"{after_vis[k]:.1f}" if k in after_vis and k != "visible" else "-",
            )
            for k, v in after_err.items()
        ],
    )
    if d.get("gate_decisions"):
        sec.notes.append(
            "Gate decisions seen (seconds after errors start): "
            + "; ".join(f"{t:.1f} s {dec}" for t, dec, *_ in d["gate_decisions"])
        )
    if "slo_evaluated" in after_vis and "slo_freeze" in after_vis:
        sec.notes.append(
            "From the evaluation instant to the SLO status showing it took "
            f"{after_vis['slo_freeze'] - after_vis['slo_evaluated']:.1f} s: the rest of that "
            "tick (every SLO's queries, then the status writes, one after another)."
        )
    sec.notes.append(
        "At an error ratio of 100%, the 1h window needs about 52 s of errors to exceed 14.4x a "
        "99.9% budget: that, plus the scrape interval, is the time before Prometheus sees the "
        "fast burn; slogate's share is what follows."
    )
    return sec


def admission_sections(a: dict[str, Any]) -> list[Section]:
    sec = Section(
        "Admission webhook under load",
        intro=(
            f"AdmissionReview requests over HTTPS on loopback, straight to the `slogate webhook` "
            f"process, which has {a['slos']:,} SLOs and {a['gates']:,} ReleaseGates indexed "
            f"(gate mix: {a['gate_mix']}). Request mix: "
            + ", ".join(f"{k} {int(w * 100)}%" for k, w in adm.MIX)
            + ". Each gated Deployment has the ReplicaSet of its current template and two earlier "
            f"ones ({a.get('replicasets', 0):,} ReplicaSets, as a real Deployment controller "
            "leaves them): a refusal checks for a rollback in the webhook's ReplicaSet index "
            "(a LIST from the API server only when the index cannot tell), and is recorded "
            "(Events, gate status) in batches off the request path. "
            "Open-loop schedule: latency is counted from when each request was due. The load "
            "generator (Python, aiohttp) shares the 2 cores with the webhook, the API server and "
            "etcd. Handler time is the webhook's own `slogate_admission_duration_seconds` "
            "histogram (bucket bounds 0.5, 1, 2.5, 5, 10 ms ...; quantiles interpolated)."
        ),
    )
    rows = []
    for r in a.get("runs", []):
        h = r["handler"]
        kinds = r["by_kind"]
        rows.append(
            (
                f"{r['rate']}/s {r.get('mix', '')}",
                f"{r['achieved_rate']:.0f}/s",
                fmt(r["sent"]),
                f"{r['errors']} / {r['wrong']}",
                ms(r["all"]["p50"]),
                ms(r["all"]["p99"]),
                ms(r["all"]["max"]),
                " ".join(f"{k} {ms(v['p99'])}" for k, v in kinds.items()),
                f"{ms(h['p50'])} / {ms(h['p99'])} (<= {ms(h['p99_bucket'])})",
                f"{r['webhook_cores']:.2f}",
                " / ".join(
                    fmt(int(r.get("rollback_checks", {}).get(src, 0))) for src in ("index", "api")
                ),
            )
        )
    sec.table(
        "",
        (
            "rate",
            "achieved",
            "requests",
            "errors / wrong answer",
            "client p50",
            "client p99",
            "client max",
            "client p99 by kind",
            "handler p50 / p99",
            "webhook CPU cores",
            "rollback checks: index / API",
        ),
        rows,
    )
    sec.notes.append(
        f"Webhook start-up with this index: {a['webhook_ready_s']:.1f} s until /readyz "
        "(initial LIST of SLOs, gates and ReplicaSets), then "
        f"{a.get('webhook_settle_s', float('nan')):.1f} s until its CPU use settled (kopf's "
        "watches deliver their own initial listing, which the index skips as already seen); "
        "the load runs start after that."
    )
    out = [sec]
    e = a.get("e2e")
    if e:
        e2e_sec = Section(
            "Admission end to end: Deployment updates through the API server",
            intro=(
                f"{e['rounds']} template changes (merge-patch `PATCH` of "
                "`spec.template.metadata.annotations`, one at a time) of each of two "
                "Deployments, alternating: one gated (healthy gate, the webhook allows) and one "
                "in the operator's namespace, which the webhook configuration excludes (the API "
                "server never calls the webhook for it). First with no webhook configuration "
                f"registered, then with it (the webhook was called {int(e['webhook_calls'])} "
                "times in the second run). The overhead is best read from the interleaved pair "
                "in the second run (same moment, same API server, only the webhook call "
                "differs); p99 of a few hundred requests on this machine moves by several ms "
                "between runs."
            ),
        )
        rows2 = []
        for label, key in (
            ("gated Deployment, no webhook registered", "gated_without"),
            ("gated Deployment, webhook registered", "gated_with"),
            ("excluded namespace, no webhook registered", "excluded_without"),
            ("excluded namespace, webhook registered", "excluded_with"),
        ):
            s = e[key]
            rows2.append((label, ms(s["p50"]), ms(s["p99"]), ms(s["max"])))
        rows2.append(
            (
                "webhook overhead: gated minus excluded, both with the webhook registered "
                "(interleaved)",
                ms(e["gated_with"]["p50"] - e["excluded_with"]["p50"]),
                ms(e["gated_with"]["p99"] - e["excluded_with"]["p99"]),
                "-",
            )
        )
        rows2.append(
            (
                "webhook overhead: gated Deployment, registered minus not registered",
                ms(e["gated_with"]["p50"] - e["gated_without"]["p50"]),
                ms(e["gated_with"]["p99"] - e["gated_without"]["p99"]),
                "-",
            )
        )
        e2e_sec.table("", ("PATCH deployment", "p50", "p99", "max"), rows2)
        out.append(e2e_sec)
    return out


# --- main ----------------------------------------------------------------------------------------


def command_line(argv: list[str]) -> str:
    if os.environ.get("MAKELEVEL"):
        return "make bench" + (f" ARGS='{' '.join(argv)}'" if argv else "")
    return "python -m bench.harness " + " ".join(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 SLOs, short runs")
    parser.add_argument("--sizes", help="comma-separated SLO counts (default 100,1000,5000)")
    parser.add_argument("--ticks", type=int, help="steady ticks per size (default 3; 10 at 5,000)")
    parser.add_argument("--gates", type=int, help="ReleaseGates for admission (default 1,000)")
    parser.add_argument("--load-seconds", type=float, help="seconds per admission rate")
    parser.add_argument("--out", type=Path, default=DOC, help="the Markdown report")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--skip", default="", help="comma-separated: math,rules,scale,admission")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = (
        [int(x) for x in args.sizes.split(",")]
        if args.sizes
        else ([100, 1000] if quick else [100, 1000, 5000])
    )
    ticks = {n: args.ticks or (10 if n >= 5000 else (2 if quick else 3)) for n in sizes}
    gates = args.gates or (200 if quick else 1000)
    load_s = args.load_seconds or (6.0 if quick else 20.0)
    rounds = 150 if quick else 500
    rates = [100, 200, 500]
    skip = set(filter(None, args.skip.split(",")))
    run = Run(quick)
    began = time.time()
    meta = {
        "date": rfc3339(began),
        "command": command_line(argv),
        "mode": "quick" if quick else "full",
        **machine(),
    }
    work = Path(tempfile.mkdtemp(prefix="slogate-bench-"))
    print(f"work directory: {work}", flush=True)
    if "math" not in skip:
        run.data["math"] = run.section("SLO math", lambda: run_bench_math(quick))
    if "rules" not in skip:
        rule_sizes = [n for n in sizes if n >= 1000] or sizes[-1:]
        run.data["rules"] = run.section(
            "Prometheus rules", lambda: rules.run(rule_sizes, work / "rules")
        )
    ports = {"services": free_port(), "live": free_port()}
    exporter: Process | None = None
    try:
        with (
            ControlPlane() as cp,
            PrometheusServer(scrape_configs=scrape_configs(ports)) as prom,
            FaultProxy(prom.url, record_limit=200_000) as proxy,
        ):
            version = json.loads(cp.kubectl("version", "-o", "json", check=True).stdout)
            meta["kube-apiserver"] = version.get("serverVersion", {}).get("gitVersion", "?")
            cp.install_crds(CRDS)
            api = Api(cp.kubeconfig)
            api.create_many(
                [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                    for ns in sorted({namespace_of(i, NAMESPACES) for i in range(NAMESPACES)})
                ]
            )
            print("\n=== backfill ===", flush=True)
            run.data["backfill"], spec = backfill(prom, work, ports)
            print(json.dumps(run.data["backfill"]), flush=True)
            exporter, state = det.start_exporter(work, spec)
            env = scale.Env(cp, api, prom, proxy, work, SERVICES, NAMESPACES)
            if "scale" not in skip:
                run.section(
                    "scale",
                    lambda: scale_section(run, env, sizes, ticks, exporter, state),
                )
            if "admission" not in skip:
                if env.created < max(sizes):
                    scale.ensure_slos(env, max(sizes))
                run.section(
                    "admission",
                    lambda: admission_section(run, env, gates, rates, load_s, rounds),
                )
            api.close()
    finally:
        if exporter is not None:
            exporter.stop()
    elapsed = time.time() - began
    meta["duration"] = f"{elapsed / 60:.1f} min"
    doc = build_document(run, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, **run.data}, indent=1, default=str))
    print(f"\nwrote {args.out} in {elapsed / 60:.1f} min; work directory {work}")
    for name in run.failures:
        print(f"FAILED section: {name}", file=sys.stderr)
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
