"""Scale: the real controller evaluating N SLOs, side by side with the naive baseline.

For each N the controller process is started fresh (so its peak RSS and its one-time history
fill belong to that N), behind a :class:`~localenv.faultproxy.FaultProxy` in pass mode
that counts and records every Prometheus request. Ticks are read from the controller's own log
line (``evaluated N SLOs: R Prometheus requests, W status writes, S s``); nothing polls the
controller's ``/metrics`` inside a measured window (with 5,000 SLOs one scrape is itself a cost,
measured separately).

Samples Prometheus loaded: Prometheus 2.42 has no ``prometheus_engine_query_samples_total``, so
the recorded requests are replayed afterwards, byte for byte plus ``stats=all``, against the same
data (every query carries an explicit ``time``/``start``/``end``, so the replay loads exactly what
the original loaded). Large sets are replayed as an evenly spaced sample per endpoint and scaled
to the request count.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.world import (
    GROUP_VERSION,
    Api,
    apiserver_writes,
    kind_of_slo,
    memory_kib,
    namespace_of,
    selectors,
    service_of,
    slo_manifest,
    slo_name,
)
from localenv.controlplane import ControlPlane
from localenv.faultproxy import FaultProxy, RecordedRequest
from localenv.processes import cpu_seconds
from localenv.prometheus import PrometheusServer
from localenv.roles import ControllerProcess, metric_value
from slogate.core.status import visible
from slogate.core.timetext import parse_rfc3339

REPO = Path(__file__).resolve().parents[1]
TICK_RE = re.compile(
    r"evaluated (\d+) SLOs: (\d+) Prometheus requests, (\d+) status writes, ([\d.]+)s"
)
INTERVAL_S = 30.0


@dataclass
class Env:
    cp: ControlPlane
    api: Api
    prom: PrometheusServer
    proxy: FaultProxy
    work: Path
    services: int
    namespaces: int
    created: int = 0  # SLOs slo-00000 .. created-1 exist


@dataclass
class Tick:
    seen_at: float
    evaluated: int
    requests: int
    writes: int
    seconds: float


class LogTail:
    """New tick lines of a controller log, as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""

    def ticks(self) -> list[Tick]:
        try:
            with self.path.open("r", errors="replace") as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        text = self.partial + chunk
        lines = text.split("\n")
        self.partial = lines.pop()
        now = time.time()
        out = []
        for line in lines:
            m = TICK_RE.search(line)
            if m:
                out.append(
                    Tick(now, int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4)))
                )
        return out


def parse_tick_line(line: str) -> tuple[int, int, int, float] | None:
    """``(evaluated, requests, writes, seconds)`` of a controller tick log line."""
    m = TICK_RE.search(line)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))


def ensure_slos(env: Env, n: int) -> float:
    """Create SLOs up to ``n``; returns the seconds it took."""
    if env.created >= n:
        return 0.0
    started = time.perf_counter()
    docs = [slo_manifest(i, env.services, env.namespaces) for i in range(env.created, n)]
    env.api.create_many(docs)
    env.created = n
    return time.perf_counter() - started


# --- samples loaded: replay with stats=all --------------------------------------------------


def replay_samples(
    prom_url: str, recorded: list[RecordedRequest], per_endpoint: int = 300
) -> dict[str, dict[str, float]]:
    """Per endpoint: requests, replayed, samples per request (mean) and estimated total."""
    by_path: dict[str, list[RecordedRequest]] = {}
    for rec in recorded:
        by_path.setdefault(rec.path.split("?")[0], []).append(rec)
    out: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=prom_url, timeout=300) as http:
        for path, recs in sorted(by_path.items()):
            step = max(1, len(recs) // per_endpoint)
            chosen = recs[::step][:per_endpoint]
            loaded = []
            for rec in chosen:
                form = {**rec.form(), "stats": "all"}
                resp = http.post(path, data=form)
                resp.raise_for_status()
                stats = resp.json()["data"].get("stats") or {}
                loaded.append(int((stats.get("samples") or {}).get("totalQueryableSamples", 0)))
            mean = sum(loaded) / len(loaded) if loaded else 0.0
            out[path] = {
                "requests": float(len(recs)),
                "replayed": float(len(chosen)),
                "samples_per_request": mean,
                "samples": mean * len(recs),
            }
    return out


def total_samples(replayed: dict[str, dict[str, float]]) -> float:
    return sum(v["samples"] for v in replayed.values())


# --- one size -----------------------------------------------------------------------------------


@dataclass
class SizeResult:
    n: int
    ticks_measured: int = 0
    create_s: float = 0.0
    startup: dict[str, Any] = field(default_factory=dict)
    steady: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    scrape: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)
    tick_log: list[dict[str, float]] = field(default_factory=list)
    detection: dict[str, Any] = field(default_factory=dict)
    steady_changes: dict[str, int] = field(default_factory=dict)
    writes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _wait_ticks(
    tail: LogTail,
    ctl: ControllerProcess,
    until: Callable[[Tick], bool],
    timeout_s: float,
    seen: list[Tick],
) -> Tick:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not ctl.alive():
            raise RuntimeError(f"the controller exited:\n{ctl.log_tail(40)}")
        for tick in tail.ticks():
            seen.append(tick)
            if until(tick):
                return tick
        time.sleep(0.2)
    raise TimeoutError(f"no matching controller tick within {timeout_s:.0f}s:\n{ctl.log_tail(20)}")


def _writes_by_kind(text: str) -> dict[str, float]:
    return {
        kind: metric_value(text, "slogate_status_writes_total", kind=kind)
        for kind in ("ServiceLevelObjective", "ReleaseGate")
    }


def run_size(
    env: Env,
    n: int,
    ticks: int,
    during: Callable[[ControllerProcess, SizeResult], None] | None = None,
    extra_slos: int = 0,
) -> SizeResult:
    """Start the controller over ``n`` SLOs, measure start-up and ``ticks`` steady ticks."""
    res = SizeResult(n=n, ticks_measured=ticks)
    res.create_s = ensure_slos(env, n)
    total = n + extra_slos
    log_path = env.work / f"controller-{n}.log"
    log_path.unlink(missing_ok=True)
    env.proxy.clear()
    api0 = apiserver_writes(env.api.metrics())
    started = time.time()
    ctl = ControllerProcess(env.cp.kubeconfig, env.proxy.url, log_path, "--log-format", "plain")
    try:
        tail = LogTail(log_path)
        seen: list[Tick] = []
        evaluated = 0

        def everyone(t: Tick) -> bool:
            nonlocal evaluated
            evaluated += t.evaluated
            return evaluated >= total

        done = _wait_ticks(tail, ctl, everyone, 120 + n * 0.2, seen)
        cpu_all = cpu_seconds(ctl.pid)
        startup_recorded = env.proxy.recorded()
        api1 = apiserver_writes(env.api.metrics())
        res.startup = {
            "wall_s": done.seen_at - started,
            "cpu_s": cpu_all,
            "ticks": len(seen),
            "requests": env.proxy.requests,
            "range_requests": sum(1 for r in startup_recorded if "query_range" in r.path),
            "status_patches": api1.get("PATCH servicelevelobjectives/status", 0)
            - api0.get("PATCH servicelevelobjectives/status", 0),
            "object_patches": api1.get("PATCH servicelevelobjectives", 0)
            - api0.get("PATCH servicelevelobjectives", 0),
            "rss_kib": memory_kib(ctl.pid).get("VmRSS", 0),
        }
        # The window starts at the end of a full tick (every SLO evaluated together).
        first = done if done.evaluated >= total else None
        if first is None:
            first = _wait_ticks(tail, ctl, lambda t: t.evaluated >= total, 3 * INTERVAL_S, seen)
        m0 = ctl.metrics_text()
        cpu0 = cpu_seconds(ctl.pid)
        env.proxy.clear()
        a0 = apiserver_writes(env.api.metrics())
        s0, rv0 = slogate_statuses(env, n)
        watch = StatusWatch(env.api, s0, rv0)
        watch.start()
        window: list[Tick] = []
        full = 0

        def count_full(t: Tick) -> bool:
            nonlocal full
            window.append(t)
            if t.evaluated >= total:
                full += 1
            return full >= ticks

        last = _wait_ticks(tail, ctl, count_full, ticks * INTERVAL_S + 600, seen)
        cpu1 = cpu_seconds(ctl.pid)
        recorded = env.proxy.recorded()
        requests = env.proxy.requests
        mem = memory_kib(ctl.pid)
        scrape_t0, scrape_c0 = time.perf_counter(), cpu_seconds(ctl.pid)
        m1 = ctl.metrics_text()
        res.scrape = {
            "wall_s": time.perf_counter() - scrape_t0,
            "cpu_s": cpu_seconds(ctl.pid) - scrape_c0,
            "lines": float(len(m1.splitlines())),
            "bytes": float(len(m1)),
        }
        a1 = apiserver_writes(env.api.metrics())
        time.sleep(1)  # let the watch deliver the last tick's writes
        watch.stop()
        res.steady_changes = changed_fields(s0, slogate_budgets(env, n))
        res.writes = write_breakdown(watch, env, n, ticks * INTERVAL_S)
        span = last.seen_at - first.seen_at
        w0, w1 = _writes_by_kind(m0), _writes_by_kind(m1)
        slo_writes = w1["ServiceLevelObjective"] - w0["ServiceLevelObjective"]
        res.steady = {
            "window_s": span,
            # k ticks on the 30 s grid: the normalisation for rates (the measured span moves
            # with how long the first and last ticks took)
            "nominal_s": ticks * INTERVAL_S,
            "ticks": ticks,
            "all_ticks": len(window),
            "cpu_s": cpu1 - cpu0,
            "requests": requests,
            "requests_by_log": sum(t.requests for t in window),
            "slo_writes": slo_writes,
            "gate_writes": w1["ReleaseGate"] - w0["ReleaseGate"],
            "status_patches_apiserver": a1.get("PATCH servicelevelobjectives/status", 0)
            - a0.get("PATCH servicelevelobjectives/status", 0),
            "tick_wall_mean_s": sum(t.seconds for t in window if t.evaluated >= total) / ticks,
            "tick_wall_max_s": max(t.seconds for t in window),
            "evaluated": sum(t.evaluated for t in window),
            # Time the controller spent waiting for Prometheus (its own request histogram): the
            # batches of one tick are sent one after another, so this adds up to tick wall time.
            "prometheus_seconds": metric_value(
                m1, "slogate_prometheus_request_duration_seconds_sum"
            )
            - metric_value(m0, "slogate_prometheus_request_duration_seconds_sum"),
            "prometheus_requests_metric": metric_value(
                m1, "slogate_prometheus_request_duration_seconds_count"
            )
            - metric_value(m0, "slogate_prometheus_request_duration_seconds_count"),
        }
        res.tick_log = [
            {"evaluated": t.evaluated, "requests": t.requests, "writes": t.writes, "s": t.seconds}
            for t in window
        ]
        res.memory = mem
        if during is not None:
            during(ctl, res)
        res.memory["VmHWM_end"] = memory_kib(ctl.pid).get("VmHWM", 0)
    finally:
        ctl.stop()
    replay_t0 = time.perf_counter()
    steady_replay = replay_samples(env.prom.url, recorded, per_endpoint=150)
    startup_replay = replay_samples(env.prom.url, startup_recorded, per_endpoint=60)
    res.steady["samples"] = total_samples(steady_replay)
    res.steady["replay"] = steady_replay
    res.startup["samples"] = total_samples(startup_replay)
    res.startup["replay"] = startup_replay
    res.notes.append(f"replaying recorded queries took {time.perf_counter() - replay_t0:.1f}s")
    return res


# --- baseline and budget agreement ---------------------------------------------------------


def slogate_budgets(env: Env, n: int) -> dict[tuple[str, str], dict[str, Any]]:
    return slogate_statuses(env, n)[0]


def slogate_statuses(env: Env, n: int) -> tuple[dict[tuple[str, str], dict[str, Any]], str]:
    """Statuses of the first ``n`` benchmark SLOs, and the list's resourceVersion."""
    wanted = {(namespace_of(i, env.namespaces), slo_name(i)) for i in range(n)}
    out = {}
    items, rv = env.api.list_rv("servicelevelobjectives")
    for item in items:
        meta = item["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in wanted:
            out[key] = item.get("status") or {}
    return out, rv


class StatusWatch(threading.Thread):
    """Watches every SLO and counts status writes per SLO, with the fields each one changed.

    A write is a new ``lastEvaluationTime`` or a change of anything a user sees; kopf's own
    metadata patches change neither and are not counted.
    """

    def __init__(self, api: Api, start: dict[tuple[str, str], dict[str, Any]], rv: str) -> None:
        super().__init__(name="status-watch", daemon=True)
        self.api = api
        self.rv = rv
        self.last = dict(start)
        self.writes: dict[tuple[str, str], int] = {}
        self.fields: dict[str, int] = {}
        self.heartbeats = 0  # writes that changed nothing a user sees
        self._stop_flag = threading.Event()
        self._resp: httpx.Response | None = None
        self.error = ""

    def run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.api.server, verify=self.api.ssl, timeout=None) as c,
                c.stream(
                    "GET",
                    f"/apis/{GROUP_VERSION}/servicelevelobjectives",
                    params={"watch": "1", "resourceVersion": self.rv},
                ) as resp,
            ):
                self._resp = resp
                for line in resp.iter_lines():
                    if self._stop_flag.is_set():
                        return
                    if line:
                        self._event(json.loads(line))
        except Exception as exc:
            if not self._stop_flag.is_set():
                self.error = f"{type(exc).__name__}: {exc}"

    def _event(self, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if key not in self.last or event.get("type") != "MODIFIED":
            return
        old, new = self.last[key], obj.get("status") or {}
        self.last[key] = new
        a, b = visible(old), visible(new)
        if old.get("lastEvaluationTime") == new.get("lastEvaluationTime") and a == b:
            return
        self.writes[key] = self.writes.get(key, 0) + 1
        if a == b:
            self.heartbeats += 1
        for name in sorted(set(a) | set(b)):
            if a.get(name) != b.get(name):
                self.fields[name] = self.fields.get(name, 0) + 1

    def stop(self) -> None:
        self._stop_flag.set()
        if self._resp is not None:
            with contextlib.suppress(Exception):
                self._resp.close()
        self.join(10)


def run_baseline(
    env: Env, n: int, statuses: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """One naive tick over the same ``n`` SLOs, each evaluated at slogate's evaluation time."""
    rows = []
    for i in range(n):
        ns, name = namespace_of(i, env.namespaces), slo_name(i)
        errors, total = selectors(service_of(i, env.services))
        spec = slo_manifest(i, env.services, env.namespaces)["spec"]
        when = (statuses.get((ns, name)) or {}).get("lastEvaluationTime")
        rows.append(
            {
                "namespace": ns,
                "name": name,
                "errors": errors,
                "total": total,
                "target": spec["target"],
                "window": spec["window"],
                "at": parse_rfc3339(when) if when else None,
            }
        )
    path = env.work / f"baseline-{n}.json"
    path.write_text(json.dumps(rows))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.baseline",
            "--input",
            str(path),
            "--kubeconfig",
            str(env.cp.kubeconfig),
            "--prometheus-url",
            env.prom.url,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def compare_budgets(
    statuses: dict[tuple[str, str], dict[str, Any]],
    exact: list[list[Any]],
    tolerance: float = 0.001,
) -> dict[str, Any]:
    """slogate's ``errorBudget.consumed`` vs the exact ``increase()`` over the window.

    ``exact`` rows are ``[namespace, name, at, consumed]`` from the baseline. The difference is
    in budget fractions: 0.001 is 0.1% of the budget.
    """
    diffs: list[tuple[float, str, float, float]] = []
    missing = 0
    for ns, name, _at, consumed in exact:
        ours = ((statuses.get((ns, name)) or {}).get("errorBudget") or {}).get("consumed")
        if ours is None or consumed is None:
            missing += 1
            continue
        diffs.append((abs(float(ours) - float(consumed)), f"{ns}/{name}", float(ours), consumed))
    diffs.sort(reverse=True)
    within = sum(1 for d in diffs if d[0] <= tolerance)
    return {
        "compared": len(diffs),
        "missing": missing,
        "within": within,
        "max_abs": diffs[0][0] if diffs else float("nan"),
        "mean_abs": sum(d[0] for d in diffs) / len(diffs) if diffs else float("nan"),
        "worst": [{"slo": d[1], "slogate": d[2], "exact": d[3], "diff": d[0]} for d in diffs[:5]],
        "tolerance": tolerance,
    }


def write_breakdown(watch: StatusWatch, env: Env, n: int, window_s: float) -> dict[str, Any]:
    """Status writes per SLO per 5 minutes by story kind, and what the writes changed."""
    per_kind: dict[str, list[int]] = {}
    for i in range(n):
        key = (namespace_of(i, env.namespaces), slo_name(i))
        per_kind.setdefault(kind_of_slo(i, env.services), []).append(watch.writes.get(key, 0))
    scale_5m = 300.0 / window_s if window_s > 0 else float("nan")
    return {
        "window_s": window_s,
        "total": sum(watch.writes.values()),
        "heartbeats": watch.heartbeats,
        "fields": dict(sorted(watch.fields.items(), key=lambda kv: -kv[1])),
        "per_slo_per_5min": {
            kind: {
                "slos": len(v),
                "mean": sum(v) / len(v) * scale_5m,
                "max": max(v) * scale_5m,
            }
            for kind, v in sorted(per_kind.items())
        },
        "error": watch.error,
    }


def changed_fields(
    before: dict[tuple[str, str], dict[str, Any]], after: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, int]:
    """How many SLOs show a different value of each status field (what users see) between two
    snapshots; ``written`` counts SLOs whose status was written at all."""
    counts: dict[str, int] = {"slos": len(after), "written": 0, "visible_change": 0}
    for key, new in after.items():
        old = before.get(key) or {}
        if old.get("lastEvaluationTime") != new.get("lastEvaluationTime"):
            counts["written"] += 1
        a, b = visible(old), visible(new)
        if a == b:
            continue
        counts["visible_change"] += 1
        for field_name in sorted(set(a) | set(b)):
            if a.get(field_name) != b.get(field_name):
                counts[field_name] = counts.get(field_name, 0) + 1
    return counts


def to_json(res: SizeResult) -> dict[str, Any]:
    return asdict(res)
