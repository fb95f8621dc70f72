"""The evaluation loop: every due SLO, a few batched Prometheus requests, one vectorized math call.

Per tick and Prometheus backend:

1. latency SLOs without a resolved bucket ask for the histogram's ``le`` values (once);
2. counts SLOs whose history is missing or a bucket behind get one batched range query of
   per-interval increases (the whole window once after start, one new bucket per hour after);
3. one batched instant query per ``batch_size`` SLOs answers every short window plus the tail
   since the last bucket boundary, for bad and total events;
4. long windows (1d, 3d, the compliance window) are summed from the history
   (``slogate.core.increments``), the math runs once per rule set, and a status is written only
   when something a user sees changed, or as a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from slogate.controller.entries import (
    BUDGET_GRID_S,
    BUDGET_SAMPLES,
    HIST_DTYPE,
    FloatArray,
    HistArray,
    Key,
    SloEntry,
    history_span_s,
    new_entry,
    nominal_window_s,
)
from slogate.core.durations import format_duration
from slogate.core.increments import bucket_end, window_sums
from slogate.core.objective import SloSpec
from slogate.core.promql import (
    QUERY_LABEL,
    batch,
    bucket_bounds_query,
    event_queries,
    match_bucket,
    render,
)
from slogate.core.slo.calendar import calendar_period
from slogate.core.slo.evaluate import evaluate
from slogate.core.slo.inputs import SloBatch
from slogate.core.slo.recommend import dependency_bound
from slogate.core.status import (
    Event,
    Problem,
    evaluated_status,
    failed_status,
    heartbeat_phase,
    needs_write,
    transitions,
)
from slogate.prometheus.client import PrometheusClient, QueryResult
from slogate.prometheus.errors import ErrorKind, PrometheusError

log = logging.getLogger("slogate.evaluator")

#: SLOs per math call. The call stacks its rows' histories ([rows, T] float64, twice: 5.8 MB
#: per 1,000 rows of 30d/1h); one call over every SLO made that a transient of tens of MB per
#: tick, which the allocator then kept. Chunks give exactly the results of one call.
COMPUTE_ROWS = 512


class SloGone(Exception):
    """The SLO a status was written to no longer exists."""


class StatusSink(Protocol):
    """Where statuses and Events go (the API server in production)."""

    async def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """True when written, False when it failed (tried again later); raises ``SloGone``."""
        ...

    async def post_event(self, ref: dict[str, Any], event: Event) -> None: ...


@dataclass(frozen=True)
class EvaluatorSettings:
    tick_s: float = 1.0  # how often the loop looks for due SLOs
    heartbeat_s: float = 300.0  # rewrite an unchanged status this often
    batch_size: int = 50  # SLOs per instant query
    history_batch_size: int = 10  # SLOs per history range query (bounded Prometheus memory)
    step_s: int = 3600  # history bucket
    direct_max_s: int = 6 * 3600  # windows up to this are asked directly every tick
    long_refresh_s: float = 300.0  # raw-query long windows are re-asked this often


@dataclass
class TickStats:
    evaluated: int = 0
    requests: int = 0
    writes: int = 0
    failures: int = 0
    seconds: float = 0.0
    by_backend: dict[str, int] = field(default_factory=dict)
    gone: list[Key] = field(default_factory=list)  # deleted SLOs found by their status write


ClientFactory = Callable[[str | None], PrometheusClient]


class Evaluator:
    def __init__(
        self,
        clients: ClientFactory,
        sink: StatusSink,
        settings: EvaluatorSettings | None = None,
        clock: Callable[[], float] = time.time,
        on_tick: Callable[[TickStats, list[SloEntry]], None] | None = None,
        after_tick: Callable[[float, bool], Awaitable[None]] | None = None,
    ) -> None:
        self.clients = clients
        self.sink = sink
        self.settings = settings or EvaluatorSettings()
        self.clock = clock
        self.on_tick = on_tick
        self.after_tick = after_tick
        self.entries: dict[Key, SloEntry] = {}
        self._wake = asyncio.Event()

    # --- registry (called by the kopf handlers) ----------------------------------------------

    def upsert(self, body: dict[str, Any], spec: SloSpec) -> SloEntry:
        """Register a new or changed SLO; an event that changes nothing (e.g. our own status
        write coming back through the watch) leaves the entry and its schedule alone."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.entries.get(key)
        if (
            old is not None
            and old.uid == meta.get("uid", "")
            and old.generation == meta.get("generation")
            and old.labels == (meta.get("labels") or {})
        ):
            # Keep the stored status current (a standby replica sees the active one's writes),
            # so a takeover compares against what users see and repeats no Event.
            old.status = body.get("status") or old.status
            return old
        entry = new_entry(body, spec, old)
        entry.next_due = 0.0  # a new or changed SLO is evaluated at once
        self.entries[key] = entry
        self.wake()
        return entry

    def remove(self, key: Key) -> SloEntry | None:
        entry = self.entries.pop(key, None)
        self.wake()
        return entry

    def wake(self) -> None:
        """Run the loop now (a new SLO, or a gate whose decision must be recomputed)."""
        self._wake.set()

    # --- loop --------------------------------------------------------------------------------

    async def run(self, active: Callable[[], bool] = lambda: True) -> None:
        """Evaluate due SLOs forever; ``active`` pauses evaluation (e.g. a standby peer)."""
        while True:
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                if active():
                    stats = await self.tick()
                    if self.after_tick is not None:
                        await self.after_tick(self.clock(), woken or stats.evaluated > 0)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop every SLO's evaluation; log and go on
                log.exception("evaluation tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.tick_s)

    async def tick(self) -> TickStats:
        started = time.monotonic()
        now = float(math.floor(self.clock()))
        due = [e for e in self.entries.values() if e.next_due <= now]
        stats = TickStats()
        if not due:
            return stats
        for entry in due:
            # On the interval's grid, so SLOs with equal intervals share ticks and requests.
            entry.next_due = (now // entry.interval_s + 1) * entry.interval_s
        by_backend: dict[str | None, list[SloEntry]] = defaultdict(list)
        for entry in due:
            by_backend[entry.spec.prometheus.url if entry.spec.prometheus else None].append(entry)
        outcomes: dict[Key, dict[str, Any]] = {}

        async def backend(url: str | None, group: list[SloEntry]) -> None:
            # Backends are independent: a slow or dead one (an SLO's own spec.prometheus.url)
            # must not hold back the evaluation of every other SLO.
            client = self.clients(url)
            before = client.request_count
            await self._evaluate_backend(client, group, now, outcomes)
            used = client.request_count - before
            stats.requests += used
            stats.by_backend[url or "default"] = used

        await asyncio.gather(*(backend(url, group) for url, group in by_backend.items()))
        for entry in due:
            new = outcomes.get(entry.key)
            if new is None:
                continue
            stats.evaluated += 1
            if (new.get("conditions") or []) and _ready(new) is False and _stale(new):
                stats.failures += 1
            heartbeat_s = self.settings.heartbeat_s
            if needs_write(entry.status, new, entry.last_write, now, heartbeat_s):
                old = entry.status
                try:
                    written = await self.sink.write_status(entry.namespace, entry.name, new)
                except SloGone:
                    # Deleted while its DELETED event was lost (a watch re-listed): forget it.
                    self.entries.pop(entry.key, None)
                    stats.gone.append(entry.key)
                    continue
                if written:
                    stats.writes += 1
                    entry.status = new
                    # The first heartbeat waits the SLO's phase longer: heartbeats spread out
                    # (at most two heartbeat periods apart, well inside --stale-after). A
                    # heartbeat as short as the interval is every tick anyway: no phase.
                    first = entry.last_write == -math.inf
                    spread = max(heartbeat_s - entry.interval_s, 0.0)
                    phase = heartbeat_phase(f"{entry.namespace}/{entry.name}", spread)
                    entry.last_write = now + phase if first else now
                    for event in transitions(old, new):
                        await self.sink.post_event(entry.ref, event)
            else:
                entry.status = {
                    **new,
                    "lastEvaluationTime": (entry.status or {}).get(
                        "lastEvaluationTime", new.get("lastEvaluationTime")
                    ),
                }
        stats.seconds = time.monotonic() - started
        if self.on_tick is not None:
            self.on_tick(stats, [e for e in due if e.key in self.entries])
        return stats

    # --- one backend -------------------------------------------------------------------------

    async def _evaluate_backend(
        self,
        client: PrometheusClient,
        group: list[SloEntry],
        now: float,
        outcomes: dict[Key, dict[str, Any]],
    ) -> None:
        problems: dict[Key, list[Problem]] = defaultdict(list)
        failed: dict[Key, Problem] = {}

        await self._resolve_buckets(client, group, problems, failed)
        ready = [e for e in group if e.key not in failed and e.queries is not None]
        counts = [e for e in ready if not e.ratio_only]
        ratios = [e for e in ready if e.ratio_only]
        boundary = bucket_end(now, self.settings.step_s)
        await self._fill_history(client, counts, boundary, failed)
        short: dict[Key, dict[str, float]] = {}
        await self._short_windows(
            client, [e for e in counts if e.key not in failed], now, boundary, short, failed
        )
        await self._ratio_windows(
            client, [e for e in ratios if e.key not in failed], now, short, failed
        )
        evaluable = [e for e in ready if e.key not in failed]
        for entry in evaluable:
            problems[entry.key].extend(self._dependency_problems(entry))
        for rules, members in _group_by_rules(evaluable).items():
            del rules
            results = self._compute(members, short, now, boundary)
            for entry, result in zip(members, results, strict=True):
                outcomes[entry.key] = evaluated_status(
                    result,
                    entry.status,
                    generation=entry.generation,
                    now=now,
                    problems=problems[entry.key],
                )
                self._sample_budget(entry, now, result.consumed)
        for entry in group:
            if entry.key in failed:
                outcomes[entry.key] = failed_status(
                    entry.status,
                    generation=entry.generation,
                    now=now,
                    problem=failed[entry.key],
                )

    async def _resolve_buckets(
        self,
        client: PrometheusClient,
        group: list[SloEntry],
        problems: dict[Key, list[Problem]],
        failed: dict[Key, Problem],
    ) -> None:
        for entry in group:
            latency = entry.spec.indicator.latency
            if latency is None or entry.queries is not None:
                continue
            try:
                result = await client.instant(bucket_bounds_query(entry.spec.indicator))
            except PrometheusError as exc:
                failed[entry.key] = Problem(exc.reason, str(exc))
                continue
            bounds = [s.labels.get("le", "") for s in result.samples]
            le = match_bucket(latency.threshold, bounds)
            if le is None:
                listed = sorted((b for b in bounds if _is_number(b)), key=float)
                failed[entry.key] = Problem(
                    "ThresholdNotABucket" if listed else "HistogramNotFound",
                    f"threshold {latency.threshold:g} is not a bucket bound of "
                    f"{latency.histogram}; its bounds are {', '.join(listed)}"
                    if listed
                    else f"no {latency.histogram} buckets found in Prometheus",
                )
                continue
            entry.le = le
            entry.queries = event_queries(entry.spec.indicator, le)

    async def _fill_history(
        self,
        client: PrometheusClient,
        entries: list[SloEntry],
        boundary: float,
        failed: dict[Key, Problem],
    ) -> None:
        step = self.settings.step_s
        needs: dict[tuple[float, float], list[SloEntry]] = defaultdict(list)
        for entry in entries:
            size = math.ceil(history_span_s(entry.spec) / step) + 1
            if (
                entry.hist_bad is None
                or entry.hist_bad.shape[0] != size
                or not (boundary - size * step < entry.hist_end)
            ):
                entry.hist_bad = np.full(size, np.nan, dtype=HIST_DTYPE)
                entry.hist_total = np.full(size, np.nan, dtype=HIST_DTYPE)
                entry.hist_end = boundary - size * step
            if entry.hist_end < boundary:
                start = entry.hist_end + step
                needs[(start, boundary)].append(entry)
        await asyncio.gather(
            *(
                self._fill_chunk(client, chunk, start, end, failed)
                for (start, end), members in needs.items()
                for chunk in _chunks(members, self.settings.history_batch_size)
            )
        )

    async def _fill_chunk(
        self,
        client: PrometheusClient,
        chunk: list[SloEntry],
        start: float,
        end: float,
        failed: dict[Key, Problem],
    ) -> None:
        step = self.settings.step_s
        parts: list[tuple[str, str]] = []
        for i, entry in enumerate(chunk):
            assert entry.queries is not None and entry.queries.total is not None
            window = format_duration(step)
            parts.append((f"{i}/b", render(entry.queries.bad, window)))
            parts.append((f"{i}/t", render(entry.queries.total, window)))
        try:
            result = await client.range(batch(parts), start, end, step)
        except PrometheusError as exc:
            if _isolate(exc, chunk):
                for half in _halves(chunk):
                    await self._fill_chunk(client, half, start, end, failed)
                return
            for entry in chunk:
                failed[entry.key] = Problem(exc.reason, str(exc))
            return
        got: dict[str, tuple[Any, Any]] = {}
        for series in result.series:
            got[series.labels.get(QUERY_LABEL, "")] = (series.timestamps, series.values)
        n_new = round((end - start) / step) + 1
        for i, entry in enumerate(chunk):
            mine = [got[k] for k in (f"{i}/b", f"{i}/t") if k in got]
            if any(not np.all(np.isfinite(np.asarray(vs, dtype=np.float64))) for _, vs in mine):
                failed[entry.key] = _non_finite(client)
                continue
            if f"{i}/t" not in got:
                # No total events over the whole span: Prometheus has nothing (yet), or
                # answered empty. Storing a history of holes would never be asked again; leave
                # it unfilled so that the next evaluation asks again.
                continue
            for kind in ("b", "t"):
                fresh = np.full(n_new, np.nan)
                if f"{i}/{kind}" in got:
                    ts, vs = got[f"{i}/{kind}"]
                    idx = np.rint((np.asarray(ts) - start) / step).astype(np.int64)
                    ok = (idx >= 0) & (idx < n_new)
                    fresh[idx[ok]] = np.asarray(vs, dtype=np.float64)[ok]
                old = entry.hist_bad if kind == "b" else entry.hist_total
                assert old is not None
                merged = _shift_in(old, fresh)
                if kind == "b":
                    entry.hist_bad = merged
                else:
                    entry.hist_total = merged
            entry.hist_end = end

    async def _short_windows(
        self,
        client: PrometheusClient,
        entries: list[SloEntry],
        now: float,
        boundary: float,
        short: dict[Key, dict[str, float]],
        failed: dict[Key, Problem],
    ) -> None:
        tail_s = int(now - boundary)
        # Concurrently, up to the client's --prometheus-max-concurrency: one request after the
        # other made a tick of 5,000 SLOs longer than its 30 s interval.
        await asyncio.gather(
            *(
                self._short_chunk(client, chunk, now, tail_s, short, failed)
                for chunk in _chunks(entries, self.settings.batch_size)
            )
        )

    async def _short_chunk(
        self,
        client: PrometheusClient,
        chunk: list[SloEntry],
        now: float,
        tail_s: int,
        short: dict[Key, dict[str, float]],
        failed: dict[Key, Problem],
    ) -> None:
        parts: list[tuple[str, str]] = []
        for i, entry in enumerate(chunk):
            assert entry.queries is not None and entry.queries.total is not None
            windows = [w for w in entry.windows_s if w <= self.settings.direct_max_s]
            labels = [format_duration(w) for w in windows]
            if tail_s > 0:
                labels.append(f"{tail_s}s")
            for label in labels:
                parts.append((f"{i}/b/{label}", render(entry.queries.bad, label)))
                parts.append((f"{i}/t/{label}", render(entry.queries.total, label)))
        try:
            result = await client.instant(batch(parts), now)
        except PrometheusError as exc:
            if _isolate(exc, chunk):
                for half in _halves(chunk):
                    await self._short_chunk(client, half, now, tail_s, short, failed)
                return
            for entry in chunk:
                failed[entry.key] = Problem(exc.reason, str(exc))
            return
        values = _by_key(result)
        for i, entry in enumerate(chunk):
            prefix = f"{i}/"
            mine = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
            if not all(math.isfinite(v) for v in mine.values()):
                # Event counts are increase() of counters: never NaN or infinite. Such an
                # answer is broken data, not "no traffic".
                failed[entry.key] = _non_finite(client)
                continue
            short[entry.key] = mine

    async def _ratio_windows(
        self,
        client: PrometheusClient,
        entries: list[SloEntry],
        now: float,
        short: dict[Key, dict[str, float]],
        failed: dict[Key, Problem],
    ) -> None:
        await asyncio.gather(
            *(
                self._ratio_chunk(client, chunk, now, short, failed)
                for chunk in _chunks(entries, self.settings.batch_size)
            )
        )

    async def _ratio_chunk(
        self,
        client: PrometheusClient,
        chunk: list[SloEntry],
        now: float,
        short: dict[Key, dict[str, float]],
        failed: dict[Key, Problem],
    ) -> None:
        parts: list[tuple[str, str]] = []
        refresh: set[Key] = set()
        for i, entry in enumerate(chunk):
            assert entry.queries is not None
            windows = [w for w in entry.windows_s if w <= self.settings.direct_max_s]
            if now - entry.long_refreshed >= self.settings.long_refresh_s:
                refresh.add(entry.key)
                windows += [w for w in entry.windows_s if w > self.settings.direct_max_s]
                windows.append(self._compliance_span(entry, now))
            for w in windows:
                parts.append((f"{i}/r/{w}", render(entry.queries.bad, _range(w))))
        try:
            result = await client.instant(batch(parts), now)
        except PrometheusError as exc:
            if _isolate(exc, chunk):
                for half in _halves(chunk):
                    await self._ratio_chunk(client, half, now, short, failed)
                return
            for entry in chunk:
                failed[entry.key] = Problem(exc.reason, str(exc))
            return
        values, counts = _by_key(result), _key_counts(result)
        for i, entry in enumerate(chunk):
            multi = [k for k, c in counts.items() if k.startswith(f"{i}/") and c > 1]
            if multi:
                failed[entry.key] = Problem(
                    "QueryReturnedManySeries",
                    "errorRatio returned more than one series; aggregate it to one, "
                    "e.g. with sum(...) / sum(...)",
                )
                continue
            got = {int(k.split("/")[2]): v for k, v in values.items() if k.startswith(f"{i}/")}
            if entry.key in refresh:
                entry.long_ratios = {
                    w: got.get(w, math.nan)
                    for w in [*entry.windows_s, self._compliance_span(entry, now)]
                    if w > self.settings.direct_max_s
                }
                entry.long_refreshed = now
            short[entry.key] = {format_duration(w): v for w, v in got.items()}

    # --- math --------------------------------------------------------------------------------

    def _compliance_span(self, entry: SloEntry, now: float) -> int:
        cal = entry.spec.calendar
        if cal is None:
            return entry.spec.window_seconds
        start, _ = calendar_period(now, cal.period, cal.time_zone)
        return max(int(now - start), 1)

    def _compute(
        self,
        members: list[SloEntry],
        short: dict[Key, dict[str, float]],
        now: float,
        boundary: float,
    ) -> list[Any]:
        """Results for ``members`` (one rule set), in chunks of ``COMPUTE_ROWS`` rows.

        Every chunk gets the shape of one call over all members (the same burn windows, history
        length and longest window), so a row's result does not depend on the chunking.
        """
        windows = sorted({w for e in members for w in e.windows_s})
        t_max = max((e.hist_bad.shape[0] for e in members if e.hist_bad is not None), default=0)
        longest = max(
            (e.spec.window_seconds if e.spec.calendar is None else _nominal(e)) for e in members
        )
        results: list[Any] = []
        for lo in range(0, len(members), COMPUTE_ROWS):
            chunk = members[lo : lo + COMPUTE_ROWS]
            results.extend(
                self._compute_chunk(chunk, windows, t_max, longest, short, now, boundary)
            )
        return results

    def _compute_chunk(
        self,
        members: list[SloEntry],
        windows: list[int],
        t_max: int,
        longest: float,
        short: dict[Key, dict[str, float]],
        now: float,
        boundary: float,
    ) -> list[Any]:
        rules = members[0].rules
        n, w_count = len(members), len(windows)
        step = self.settings.step_s
        tail_s = now - boundary
        bad = np.full((n, w_count), np.nan)
        total = np.full((n, w_count), np.nan)
        comp_bad = np.full(n, np.nan)
        comp_total = np.full(n, np.nan)
        window_s = np.zeros(n)
        period_start = np.full(n, np.nan)
        period_end = np.full(n, np.nan)
        ratio_only = np.zeros(n, dtype=bool)
        dep = np.full(n, np.nan)
        hist_bad = np.full((n, t_max + 1 if t_max else 0), np.nan)
        hist_total = np.full_like(hist_bad, np.nan)
        last_slot = int(bucket_end(now, BUDGET_GRID_S)) // BUDGET_GRID_S
        first_slot = last_slot - BUDGET_SAMPLES + 1
        grid = [float(slot * BUDGET_GRID_S) for slot in range(first_slot, last_slot + 1)]
        consumed_hist = np.full((n, len(grid)), np.nan)
        for i, entry in enumerate(members):
            values = short.get(entry.key, {})
            cal = entry.spec.calendar
            window_s[i] = entry.spec.window_seconds if cal is None else _nominal(entry)
            if cal is not None:
                period_start[i], period_end[i] = calendar_period(now, cal.period, cal.time_zone)
            dep[i] = self._dependency_bound(entry)
            entry.budget_samples.fill(consumed_hist[i], first_slot)
            if entry.ratio_only:
                ratio_only[i] = True
                for j, w in enumerate(windows):
                    if w not in entry.windows_s:
                        continue
                    r = values.get(format_duration(w), entry.long_ratios.get(w, np.nan))
                    if _finite(r):
                        bad[i, j], total[i, j] = r, 1.0
                span = self._compliance_span(entry, now)
                r = values.get(format_duration(span), entry.long_ratios.get(span, np.nan))
                if _finite(r):
                    comp_bad[i], comp_total[i] = r, 1.0
                continue
            tail_label = f"{int(tail_s)}s"
            tail_b = values.get(f"b/{tail_label}", 0.0 if tail_s < 1 else np.nan)
            tail_t = values.get(f"t/{tail_label}", 0.0 if tail_s < 1 else np.nan)
            hb, ht = entry.hist_bad, entry.hist_total
            assert hb is not None and ht is not None
            derived = [w for w in windows if w > self.settings.direct_max_s]
            spans = [*derived, self._compliance_span(entry, now)]
            sums_b = window_sums(hb[None, :], np.array([tail_b]), tail_s, step, spans)[0]
            sums_t = window_sums(ht[None, :], np.array([tail_t]), tail_s, step, spans)[0]
            for j, w in enumerate(windows):
                if w not in entry.windows_s:
                    continue
                if w <= self.settings.direct_max_s:
                    b = values.get(f"b/{format_duration(w)}", np.nan)
                    t = values.get(f"t/{format_duration(w)}", np.nan)
                else:
                    k = derived.index(w)
                    b, t = float(sums_b[k]), float(sums_t[k])
                if _finite(b) and _finite(t):
                    bad[i, j], total[i, j] = max(b, 0.0), max(t, 0.0)
            if _finite(sums_b[-1]) and _finite(sums_t[-1]):
                comp_bad[i], comp_total[i] = max(sums_b[-1], 0.0), max(sums_t[-1], 0.0)
            size = hb.shape[0]
            hist_bad[i, t_max - size : t_max] = hb
            hist_total[i, t_max - size : t_max] = ht
            hist_bad[i, t_max] = tail_b
            hist_total[i, t_max] = tail_t
        min_events = np.array([float(e.spec.evaluation.min_events) for e in members])
        result = evaluate(
            SloBatch(
                target=np.array([e.spec.target for e in members]),
                windows_s=np.array(windows, dtype=np.int64),
                bad=bad,
                total=total,
                compliance_bad=comp_bad,
                compliance_total=comp_total,
                window_s=window_s,
                now=now,
                min_events=min_events,
                ratio_only=ratio_only,
                period_start=period_start,
                period_end=period_end,
                hist_bad=hist_bad,
                hist_total=hist_total,
                step_s=float(step),
                budget_times=np.array(grid, dtype=np.float64),
                budget_consumed=consumed_hist,
                dependency_bound=dep,
                longest_window_s=longest,
            ),
            rules,
        )
        return list(result.results())

    def _sample_budget(self, entry: SloEntry, now: float, consumed: float | None) -> None:
        if consumed is None:
            return
        entry.budget_samples.put(int(bucket_end(now, BUDGET_GRID_S)) // BUDGET_GRID_S, consumed)

    # --- dependencies ------------------------------------------------------------------------

    def _dependency_targets(self, entry: SloEntry) -> tuple[list[float], list[str]]:
        targets, missing = [], []
        for dep in entry.spec.depends_on:
            key = dep.resolve(entry.namespace)
            other = self.entries.get(key)
            if other is None:
                missing.append(f"{key[0]}/{key[1]}")
            else:
                targets.append(other.spec.target)
        return targets, missing

    def _dependency_bound(self, entry: SloEntry) -> float:
        targets, missing = self._dependency_targets(entry)
        if not targets or missing:
            return math.nan
        return dependency_bound(targets)

    def _dependency_problems(self, entry: SloEntry) -> list[Problem]:
        _, missing = self._dependency_targets(entry)
        if not missing:
            return []
        return [
            Problem(
                "UnknownDependency", f"dependsOn names SLOs that do not exist: {', '.join(missing)}"
            )
        ]


def _shift_in(old: HistArray, fresh: FloatArray) -> HistArray:
    """``old`` moved left by ``len(fresh)``, ``fresh`` at its end: a new array of old's length.

    Not ``np.concatenate([old, fresh])[-len(old):]``: that view keeps the whole concatenation
    alive, twice the history after the start-up fill.
    """
    size, k = old.shape[0], fresh.shape[0]
    out = np.empty(size, dtype=HIST_DTYPE)
    if k >= size:
        out[:] = fresh[k - size :]
    else:
        out[: size - k] = old[k:]
        out[size - k :] = fresh
    return out


def _nominal(entry: SloEntry) -> float:
    return float(nominal_window_s(entry.spec))


def _range(seconds: int) -> str:
    return format_duration(seconds)


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _by_key(result: QueryResult) -> dict[str, float]:
    return {s.labels.get(QUERY_LABEL, ""): s.value for s in result.samples}


def _key_counts(result: QueryResult) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for s in result.samples:
        counts[s.labels.get(QUERY_LABEL, "")] += 1
    return counts


def _isolate(exc: PrometheusError, chunk: list[SloEntry]) -> bool:
    """A batched request Prometheus rejects: find the SLO(s) at fault instead of failing all."""
    return exc.kind is ErrorKind.BAD_QUERY and len(chunk) > 1


def _halves(chunk: list[SloEntry]) -> list[list[SloEntry]]:
    mid = len(chunk) // 2
    return [chunk[:mid], chunk[mid:]]


def _non_finite(client: PrometheusClient) -> Problem:
    return Problem(
        "BadPrometheusResponse",
        f"Prometheus at {client.config.safe_url} answered NaN or Inf event counts; increase() "
        "of a counter is a finite number, so the series hold bad samples",
    )


def _chunks(items: Sequence[SloEntry], size: int) -> Iterable[list[SloEntry]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _group_by_rules(entries: Iterable[SloEntry]) -> dict[Any, list[SloEntry]]:
    groups: dict[Any, list[SloEntry]] = defaultdict(list)
    for entry in entries:
        groups[entry.rules].append(entry)
    return groups


def _ready(status: dict[str, Any]) -> bool | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return None


def _stale(status: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Stale" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
