"""The evaluation loop: every due SLO, a few batched Prometheus requests, one vectorized math call.

SLOs are evaluated in *units* that share nothing but the process:

- the SLOs of one namespace on one Prometheus backend form a unit and share batched requests
  (their selectors pass a token-by-token grammar, so none can write into another's result);
- an SLO with free-form PromQL (``indicator.query``) is a unit of its own, and so is an SLO once
  a rejected batch was narrowed down to it;
- SLOs whose history is still being loaded (new ones) form a unit of their own per namespace,
  so a burst of new SLOs, or one that never finds its data, does not slow the settled ones;
- units run as independent tasks with a deadline and write their own statuses when done, so a
  hanging backend, a huge answer, a query Prometheus rejects or an unexpected error holds back
  that unit alone: every other SLO keeps its schedule and its numbers. SLOs that run alone take
  turns within their namespace (``solo_per_namespace`` at a time, new and failing ones at most
  one fewer), so a namespace of many such SLOs cannot crowd out the others' requests.

Per unit:

1. latency SLOs without a resolved bucket ask for the histogram's ``le`` values (once);
2. counts SLOs whose history is missing or a bucket behind get one batched range query of
   per-interval increases (the whole window once after start, one new bucket per hour after);
3. one batched instant query per ``batch_size`` SLOs answers every short window plus the tail
   since the last bucket boundary, for bad and total events;
4. long windows (1d, 3d, the compliance window) are summed from the history
   (``slogate.core.increments``), the math runs once per shape of SLO, and a status is written
   only when something a user sees changed, or as a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
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
    new_entry,
)
from slogate.core.durations import format_duration
from slogate.core.increments import bucket_end, window_sums
from slogate.core.objective import SloSpec
from slogate.core.policy import history_span_s, nominal_window_s
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
    RulesCondition,
    condition,
    evaluated_status,
    failed_status,
    heartbeat_phase,
    needs_write,
    transitions,
    with_rules_condition,
)
from slogate.prometheus import UrlNotAllowed
from slogate.prometheus.client import PrometheusClient, QueryResult
from slogate.prometheus.errors import ErrorKind, PrometheusError

log = logging.getLogger("slogate.evaluator")

#: SLOs per math call. The call stacks its rows' histories ([rows, T] float64, twice: 5.8 MB
#: per 1,000 rows of 30d/1h); one call over every SLO made that a transient of tens of MB per
#: tick, which the allocator then kept. Chunks give exactly the results of one call.
COMPUTE_ROWS = 512
URL_FIELD = "spec.prometheus.url"
# Failures one SLO of a batch can cause for all: the batch is split to find it.
_NARROWED = (ErrorKind.BAD_QUERY, ErrorKind.RESPONSE_TOO_LARGE)


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
    unit_deadline_s: float = 120.0  # a unit still busy after this is failed (and retried)
    # Mimir/Cortex multi-tenancy: this header carries the SLO's namespace on every query.
    tenant_header: str | None = None
    # PromQL text per request, so a few long selectors cannot make a request Prometheus's form
    # parser refuses (Go's limit is 10 MB).
    max_query_bytes: int = 256 * 1024
    settle_s: float = 2.0  # a new or changed SLO waits this long for others to join its unit
    solo_per_namespace: int = 2  # units of one SLO each, in flight per namespace
    struggling_solos: int = 2  # of those, new or failing ones in flight across all namespaces


@dataclass(frozen=True)
class UnitKey:
    """What SLOs share a unit: one backend (None: the operator's), one namespace, whether their
    history is still loading, and the SLO's name when it runs alone."""

    url: str | None
    namespace: str
    solo: str | None = None
    loading: bool = False


@dataclass
class TickStats:
    """What an evaluation round (one unit, or a whole tick) did."""

    evaluated: int = 0
    requests: int = 0
    writes: int = 0
    seconds: float = 0.0
    overruns: int = 0  # units that finished after their SLOs were due again
    failures: Counter[str] = field(default_factory=Counter)  # failed evaluations by reason
    gone: list[Key] = field(default_factory=list)  # deleted SLOs found by their status write

    def add(self, other: TickStats) -> None:
        self.evaluated += other.evaluated
        self.requests += other.requests
        self.writes += other.writes
        self.seconds = max(self.seconds, other.seconds)
        self.overruns += other.overruns
        self.failures.update(other.failures)
        self.gone.extend(other.gone)


ClientFactory = Callable[[str | None], PrometheusClient]


class Backend:
    """A unit's way to Prometheus: the shared client, plus the unit's tenant header, counting
    the unit's own requests."""

    def __init__(self, client: PrometheusClient, headers: Mapping[str, str], own_url: bool) -> None:
        self.client = client
        self.headers = dict(headers)
        self.own_url = own_url  # the SLOs' spec.prometheus.url, not the operator's backend
        self.requests = 0

    async def instant(self, query: str, at: float | None = None) -> QueryResult:
        self.requests += 1
        return await self.client.instant(query, at, headers=self.headers)

    async def range(self, query: str, start: float, end: float, step: float) -> QueryResult:
        self.requests += 1
        return await self.client.range(query, start, end, step, headers=self.headers)

    @property
    def safe_url(self) -> str:
        return self.client.config.safe_url


class Evaluator:
    def __init__(
        self,
        clients: ClientFactory,
        sink: StatusSink,
        settings: EvaluatorSettings | None = None,
        clock: Callable[[], float] = time.time,
        on_tick: Callable[[TickStats, list[SloEntry]], None] | None = None,
        after_tick: Callable[[float, bool], Awaitable[None]] | None = None,
        rules_condition: Callable[[Key], RulesCondition | None] | None = None,
    ) -> None:
        self.clients = clients
        # The RulesReady condition each status carries (None: the controller keeps no rules).
        self.rules_condition = rules_condition
        self.sink = sink
        self.settings = settings or EvaluatorSettings()
        self.clock = clock
        self.on_tick = on_tick  # after each unit, with what it did
        self.after_tick = after_tick  # once per loop round (gates)
        self.entries: dict[Key, SloEntry] = {}
        self.loop_beat = time.monotonic()  # the loop's last round: what liveness watches
        self._wake = asyncio.Event()
        self._busy: set[Key] = set()  # SLOs whose unit is still running
        self._units: set[asyncio.Task[TickStats]] = set()
        # Per namespace: all solo turns, and those new or failing SLOs may hold.
        self._solo_slots: dict[str, tuple[Turns, Turns]] = {}
        self._struggling = Turns(self.settings.struggling_solos)

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
        # Evaluated within moments, together with whatever else arrives meanwhile: at start-up
        # thousands arrive one watch event at a time, and one unit per arrival would cost a
        # history query each.
        entry.next_due = self.clock() + self.settings.settle_s
        self.entries[key] = entry
        return entry

    def remove(self, key: Key) -> SloEntry | None:
        entry = self.entries.pop(key, None)
        self.wake()
        return entry

    def wake(self) -> None:
        """Run the loop now (a new SLO, or a gate whose decision must be recomputed)."""
        self._wake.set()

    @property
    def units_running(self) -> int:
        return len(self._units)

    # --- loop --------------------------------------------------------------------------------

    async def run(self, active: Callable[[], bool] = lambda: True) -> None:
        """Evaluate due SLOs forever; ``active`` pauses evaluation (e.g. a standby peer)."""
        try:
            while True:
                self.loop_beat = time.monotonic()
                woken = self._wake.is_set()
                self._wake.clear()
                try:
                    if active():
                        self.start_due()
                        if self.after_tick is not None:
                            await self.after_tick(self.clock(), woken)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not stop every SLO's evaluation; log and go on
                    log.exception("evaluation round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._until_due())
        finally:
            for task in list(self._units):
                task.cancel()
            await asyncio.gather(*self._units, return_exceptions=True)

    def _until_due(self) -> float:
        """Seconds until the next SLO falls due (just past it, so that the round starts on its
        grid second), at most ``tick_s``."""
        free = (e.next_due for e in self.entries.values() if e.key not in self._busy)
        wait = min(free, default=math.inf) - self.clock() + 0.01
        return min(max(wait, 0.0), self.settings.tick_s)

    def start_due(self) -> list[asyncio.Task[TickStats]]:
        """Start a task per unit of due SLOs whose previous unit is done; they write their own
        statuses. SLOs still busy stay due and start as soon as their unit finishes."""
        now = float(math.floor(self.clock()))
        due = [e for e in self.entries.values() if e.next_due <= now and e.key not in self._busy]
        if not due:
            return []
        units: dict[UnitKey, list[SloEntry]] = defaultdict(list)
        boundary = bucket_end(now, self.settings.step_s)
        for entry in due:
            # On the interval's grid, so SLOs with equal intervals share ticks and requests.
            entry.next_due = (now // entry.interval_s + 1) * entry.interval_s
            units[unit_of(entry, boundary, self.settings.step_s)].append(entry)
        # Batches of settled SLOs first: solo units queue for their namespace's turns after.
        order = sorted(units, key=lambda k: (k.solo is not None, k.loading))
        round_ = _Round(len(order), time.monotonic())
        tasks = []
        for key in order:
            members = units[key]
            self._busy.update(e.key for e in members)
            task = asyncio.create_task(self._run_unit(key, members, now), name=f"unit {key}")
            self._units.add(task)
            task.add_done_callback(self._unit_done(members, round_))
            tasks.append(task)
        return tasks

    def _unit_done(
        self, members: list[SloEntry], round_: _Round
    ) -> Callable[[asyncio.Task[TickStats]], None]:
        def done(task: asyncio.Task[TickStats]) -> None:
            self._units.discard(task)
            self._busy.difference_update(e.key for e in members)
            self.wake()  # gates read the new statuses; SLOs held back meanwhile may start
            if not task.cancelled() and task.exception() is None:
                round_.stats.add(task.result())
            round_.left -= 1
            if round_.left == 0 and round_.stats.evaluated:
                st = round_.stats
                log.info(
                    "evaluated %d SLOs: %d Prometheus requests, %d status writes, %.3fs (%d units)",
                    st.evaluated,
                    st.requests,
                    st.writes,
                    time.monotonic() - round_.started,
                    round_.units,
                )

        return done

    async def _run_unit(self, key: UnitKey, members: list[SloEntry], now: float) -> TickStats:
        if key.solo is None:
            return await self._unit(key, members, now)
        slots = self._solo_slots.get(key.namespace)
        if slots is None:
            per_ns = self.settings.solo_per_namespace
            slots = self._solo_slots[key.namespace] = (Turns(per_ns), Turns(max(1, per_ns - 1)))
        turns, struggling_here = slots
        # An SLO that evaluated cleanly last time goes before new and failing ones: a burst of
        # new or broken SLOs in a namespace does not delay the ones that work. Priority alone
        # does not suffice (a slow failing unit already holding every turn is not pre-empted),
        # so new and failing ones hold at most all but one of the namespace's turns. They also
        # share a few turns across all namespaces, so that many of them cannot fill the
        # requests every namespace's working SLOs wait for.
        if (condition(members[0].status, "Ready") or {}).get("status") == "True":
            async with turns.take(0):
                return await self._unit(key, members, now)
        # The shared turns first: waiting for them must not hold one of the namespace's.
        async with self._struggling.take(0), struggling_here.take(0), turns.take(1):
            return await self._unit(key, members, now)

    async def _unit(self, key: UnitKey, members: list[SloEntry], now: float) -> TickStats:
        started = time.monotonic()
        stats = TickStats()
        try:
            outcomes = await self._evaluate_unit(key, members, now, stats)
        except Exception:
            if len(members) > 1:
                # Something nobody foresaw, maybe in one SLO's spec: evaluate each SLO alone
                # from now on, so the one at fault fails by itself.
                log.exception("evaluating %s failed; evaluating its SLOs one by one", key)
                for entry in members:
                    entry.solo = True
                parts = await asyncio.gather(
                    *(self._unit(dataclasses.replace(key, solo=e.name), [e], now) for e in members)
                )
                for part in parts:
                    stats.add(part)
                return stats
            log.exception("evaluating %s/%s failed", key.namespace, members[0].name)
            problem = Problem(
                "InternalError",
                "evaluation failed unexpectedly (a bug in slogate; the controller log has the "
                "details); other SLOs are not affected",
            )
            outcomes = {e.key: self._failed(e, problem, now) for e in members}
        await self._write(members, outcomes, now, stats)
        stats.seconds = time.monotonic() - started
        stats.overruns = int(any(e.next_due <= self.clock() for e in members))
        if self.on_tick is not None:
            self.on_tick(stats, [e for e in members if self.entries.get(e.key) is e])
        return stats

    async def _evaluate_unit(
        self, key: UnitKey, members: list[SloEntry], now: float, stats: TickStats
    ) -> dict[Key, dict[str, Any]]:
        try:
            client = self.clients(key.url)
        except UrlNotAllowed as exc:
            problem = Problem(exc.reason, _without_field(str(exc)), URL_FIELD)
            return {e.key: self._failed(e, problem, now) for e in members}
        headers = {}
        if self.settings.tenant_header:
            headers[self.settings.tenant_header] = key.namespace
        backend = Backend(client, headers, own_url=key.url is not None)
        try:
            async with asyncio.timeout(self.settings.unit_deadline_s):
                return await self._evaluate_backend(backend, members, now)
        except TimeoutError:
            problem = Problem(
                "EvaluationTimeout",
                f"Prometheus at {backend.safe_url} did not answer every query within "
                f"{self.settings.unit_deadline_s:g}s; retried at the next interval",
                URL_FIELD if backend.own_url else None,
            )
            return {e.key: self._failed(e, problem, now) for e in members}
        finally:
            stats.requests += backend.requests

    def _failed(self, entry: SloEntry, problem: Problem, now: float) -> dict[str, Any]:
        return failed_status(entry.status, generation=entry.generation, now=now, problem=problem)

    async def _write(
        self,
        members: list[SloEntry],
        outcomes: dict[Key, dict[str, Any]],
        now: float,
        stats: TickStats,
    ) -> None:
        for entry in members:
            new = outcomes.get(entry.key)
            if new is None or self.entries.get(entry.key) is not entry:
                continue  # deleted, or changed while this unit ran: the new one is due at once
            stats.evaluated += 1
            if self.rules_condition is not None:
                new = with_rules_condition(
                    new, self.rules_condition(entry.key), now, entry.generation
                )
            ready = condition(new, "Ready")
            if ready is not None and ready.get("status") != "True":
                stats.failures[str(ready.get("reason") or "Unknown")] += 1
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

    # --- one unit ------------------------------------------------------------------------

    async def _evaluate_backend(
        self, backend: Backend, group: list[SloEntry], now: float
    ) -> dict[Key, dict[str, Any]]:
        problems: dict[Key, list[Problem]] = defaultdict(list)
        failed: dict[Key, Problem] = {}

        await self._resolve_buckets(backend, group, failed)
        ready = [e for e in group if e.key not in failed and e.queries is not None]
        counts = [e for e in ready if not e.ratio_only]
        ratios = [e for e in ready if e.ratio_only]
        boundary = bucket_end(now, self.settings.step_s)
        await self._fill_history(backend, counts, boundary, failed)
        short: dict[Key, dict[str, float]] = {}
        await self._short_windows(
            backend, [e for e in counts if e.key not in failed], now, boundary, short, failed
        )
        await self._ratio_windows(
            backend, [e for e in ratios if e.key not in failed], now, short, failed
        )
        evaluable = [e for e in ready if e.key not in failed]
        for entry in evaluable:
            problems[entry.key].extend(self._dependency_problems(entry))
        outcomes: dict[Key, dict[str, Any]] = {}
        for members in _group_by_shape(evaluable).values():
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
                outcomes[entry.key] = self._failed(entry, failed[entry.key], now)
        return outcomes

    async def _isolating(
        self,
        backend: Backend,
        chunk: list[SloEntry],
        attempt: Callable[[list[SloEntry]], Awaitable[None]],
        failed: dict[Key, Problem],
    ) -> None:
        """``attempt(chunk)``; a batch Prometheus rejects (or answers too much for) is halved
        until the SLO(s) at fault are found (rejected ones run alone from then on); any other
        failure fails the whole chunk."""
        try:
            await attempt(chunk)
        except PrometheusError as exc:
            if exc.kind in _NARROWED and len(chunk) > 1:
                for half in _halves(chunk):
                    await self._isolating(backend, half, attempt, failed)
                return
            for entry in chunk:
                if exc.kind is ErrorKind.BAD_QUERY:
                    entry.solo = True
                failed[entry.key] = await self._problem(backend, entry, exc, len(chunk) == 1)

    async def _problem(
        self, backend: Backend, entry: SloEntry, exc: PrometheusError, alone: bool
    ) -> Problem:
        """What failed, naming the spec field to fix where the SLO's own spec is at fault."""
        if exc.kind is ErrorKind.BAD_QUERY and alone:
            if entry.blame is None or entry.blame[0] != exc.message:
                entry.blame = (exc.message, await self._blame(backend, entry, exc))
            return entry.blame[1]
        if exc.kind is ErrorKind.RESPONSE_TOO_LARGE and entry.ratio_only and not backend.own_url:
            return Problem(
                exc.reason,
                f"{exc}; errorRatio must return one series per window: aggregate it",
                "spec.indicator.query.errorRatio",
            )
        return Problem(exc.reason, str(exc), URL_FIELD if backend.own_url else None)

    async def _blame(self, backend: Backend, entry: SloEntry, exc: PrometheusError) -> Problem:
        """Which field of a rejected SLO Prometheus refuses: each selector is asked alone
        (once per rejection; the answer is kept with the entry)."""
        indicator = entry.spec.indicator
        fields: list[tuple[str, str]] = []
        if indicator.ratio is not None:
            ratio = indicator.ratio
            named = [("errors", ratio.errors), ("good", ratio.good), ("total", ratio.total)]
            fields = [(f"spec.indicator.ratio.{n}", v.strip()) for n, v in named if v is not None]
        elif indicator.latency is not None:
            return Problem(exc.reason, str(exc), "spec.indicator.latency.histogram")
        else:
            return Problem(exc.reason, str(exc), "spec.indicator.query.errorRatio")
        for name, selector in fields:
            try:
                await backend.instant(f"count({selector})")
            except PrometheusError as probe:
                if probe.kind is ErrorKind.BAD_QUERY:
                    return Problem(probe.reason, str(probe), name)
        return Problem(exc.reason, str(exc), "spec.indicator.ratio")

    async def _resolve_buckets(
        self, backend: Backend, group: list[SloEntry], failed: dict[Key, Problem]
    ) -> None:
        async def resolve(entry: SloEntry) -> None:
            latency = entry.spec.indicator.latency
            assert latency is not None
            try:
                result = await backend.instant(bucket_bounds_query(entry.spec.indicator))
            except PrometheusError as exc:
                if exc.kind is ErrorKind.BAD_QUERY:
                    failed[entry.key] = Problem(
                        exc.reason, str(exc), "spec.indicator.latency.histogram"
                    )
                else:
                    failed[entry.key] = await self._problem(backend, entry, exc, True)
                return
            bounds = [s.labels.get("le", "") for s in result.samples]
            le = match_bucket(latency.threshold, bounds)
            if le is None:
                listed = sorted((b for b in bounds if _is_number(b)), key=float)
                failed[entry.key] = Problem(
                    "ThresholdNotABucket" if listed else "HistogramNotFound",
                    f"threshold {latency.threshold:g} is not a bucket bound of "
                    f"{latency.histogram}; its bounds are {', '.join(listed[:30])}"
                    if listed
                    else f"no {latency.histogram} buckets found in Prometheus",
                    "spec.indicator.latency.threshold"
                    if listed
                    else "spec.indicator.latency.histogram",
                )
                return
            entry.queries = event_queries(entry.spec.indicator, le)

        await asyncio.gather(
            *(
                resolve(e)
                for e in group
                if e.spec.indicator.latency is not None and e.queries is None
            )
        )

    async def _fill_history(
        self,
        backend: Backend,
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

        def attempt(start: float, end: float) -> Callable[[list[SloEntry]], Awaitable[None]]:
            return lambda chunk: self._fill_chunk(backend, chunk, start, end, failed)

        await asyncio.gather(
            *(
                self._isolating(backend, chunk, attempt(start, end), failed)
                for (start, end), members in needs.items()
                for chunk in self._chunks(members, self.settings.history_batch_size, 2)
            )
        )

    async def _fill_chunk(
        self,
        backend: Backend,
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
        result = await backend.range(batch(parts), start, end, step)
        got: dict[str, tuple[Any, Any]] = {}
        for series in result.series:
            got[series.labels.get(QUERY_LABEL, "")] = (series.timestamps, series.values)
        n_new = round((end - start) / step) + 1
        for i, entry in enumerate(chunk):
            mine = [got[k] for k in (f"{i}/b", f"{i}/t") if k in got]
            if any(not np.all(np.isfinite(np.asarray(vs, dtype=np.float64))) for _, vs in mine):
                failed[entry.key] = _non_finite(backend)
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
        backend: Backend,
        entries: list[SloEntry],
        now: float,
        boundary: float,
        short: dict[Key, dict[str, float]],
        failed: dict[Key, Problem],
    ) -> None:
        tail_s = int(now - boundary)

        async def attempt(chunk: list[SloEntry]) -> None:
            await self._short_chunk(backend, chunk, now, tail_s, short, failed)

        # Concurrently, up to the client's --prometheus-max-concurrency: one request after the
        # other made a tick of 5,000 SLOs longer than its 30 s interval.
        await asyncio.gather(
            *(
                self._isolating(backend, chunk, attempt, failed)
                for chunk in self._chunks(entries, self.settings.batch_size, 16)
            )
        )

    async def _short_chunk(
        self,
        backend: Backend,
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
        values = _by_key(await backend.instant(batch(parts), now))
        for i, entry in enumerate(chunk):
            prefix = f"{i}/"
            mine = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
            if not all(math.isfinite(v) for v in mine.values()):
                # Event counts are increase() of counters: never NaN or infinite. Such an
                # answer is broken data, not "no traffic".
                failed[entry.key] = _non_finite(backend)
                continue
            short[entry.key] = mine

    async def _ratio_windows(
        self,
        backend: Backend,
        entries: list[SloEntry],
        now: float,
        short: dict[Key, dict[str, float]],
        failed: dict[Key, Problem],
    ) -> None:
        async def attempt(chunk: list[SloEntry]) -> None:
            await self._ratio_chunk(backend, chunk, now, short, failed)

        await asyncio.gather(
            *(
                self._isolating(backend, chunk, attempt, failed)
                for chunk in self._chunks(entries, self.settings.batch_size, 16)
            )
        )

    async def _ratio_chunk(
        self,
        backend: Backend,
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
        result = await backend.instant(batch(parts), now)
        values, counts = _by_key(result), _key_counts(result)
        for i, entry in enumerate(chunk):
            multi = [k for k, c in counts.items() if k.startswith(f"{i}/") and c > 1]
            if multi:
                failed[entry.key] = Problem(
                    "QueryReturnedManySeries",
                    "returned more than one series; aggregate it to one, "
                    "e.g. with sum(...) / sum(...)",
                    "spec.indicator.query.errorRatio",
                )
                continue
            got: dict[int, float] = {}
            for k, v in values.items():
                key_parts = k.split("/")
                # Only keys this request asked for: a series carrying any other label value
                # (an errorRatio that sets slogate_q itself) is not a number of this SLO's.
                if len(key_parts) == 3 and key_parts[0] == str(i) and key_parts[2].isdigit():
                    got[int(key_parts[2])] = v
            if entry.key in refresh:
                entry.long_ratios = {
                    w: got.get(w, math.nan)
                    for w in [*entry.windows_s, self._compliance_span(entry, now)]
                    if w > self.settings.direct_max_s
                }
                entry.long_refreshed = now
            short[entry.key] = {format_duration(w): v for w, v in got.items()}

    def _chunks(
        self, entries: Sequence[SloEntry], size: int, windows: int
    ) -> Iterable[list[SloEntry]]:
        """At most ``size`` SLOs per request, and at most ``max_query_bytes`` of PromQL (an SLO
        costs about its templates' length once per window)."""
        chunk: list[SloEntry] = []
        used = 0
        for entry in entries:
            queries = entry.queries
            assert queries is not None
            cost = (len(queries.bad) + len(queries.total or "") + 64) * windows
            if chunk and (len(chunk) >= size or used + cost > self.settings.max_query_bytes):
                yield chunk
                chunk, used = [], 0
            chunk.append(entry)
            used += cost
        if chunk:
            yield chunk

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


def _halves(chunk: list[SloEntry]) -> list[list[SloEntry]]:
    mid = len(chunk) // 2
    return [chunk[:mid], chunk[mid:]]


def _non_finite(backend: Backend) -> Problem:
    return Problem(
        "BadPrometheusResponse",
        f"Prometheus at {backend.safe_url} answered NaN or Inf event counts; increase() "
        "of a counter is a finite number, so the series hold bad samples",
        URL_FIELD if backend.own_url else None,
    )


def unit_of(entry: SloEntry, boundary: float, step_s: int) -> UnitKey:
    """The unit an SLO is evaluated in (see the module docstring)."""
    url = entry.spec.prometheus.url if entry.spec.prometheus else None
    solo = entry.name if entry.ratio_only or entry.solo else None
    return UnitKey(url, entry.namespace, solo, loading=_loading(entry, boundary, step_s))


def _loading(entry: SloEntry, boundary: float, step_s: int) -> bool:
    """A counts SLO whose history lacks more than the newest bucket (new, or its data never
    came), or a latency SLO whose threshold bucket is not resolved yet."""
    if entry.ratio_only:
        return False
    if entry.queries is None:
        return True
    return entry.hist_bad is None or not boundary - entry.hist_end <= step_s


class Turns:
    """At most ``slots`` holders at once; waiters are served lowest priority value first, then
    in arrival order."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def take(self, priority: int) -> AsyncIterator[None]:
        if self.free > 0 and not self._waiting:
            self.free -= 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (priority, next(self._arrivals), turn)
            heapq.heappush(self._waiting, entry)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # granted just as it was cancelled: pass it on
                else:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)  # the slot passes straight to the next waiter
                return
        self.free += 1


@dataclass
class _Round:
    """The units one call of ``start_due`` started: logged as one line once all are done."""

    units: int
    started: float
    left: int = -1
    stats: TickStats = field(default_factory=TickStats)

    def __post_init__(self) -> None:
        self.left = self.units


def _group_by_shape(entries: Iterable[SloEntry]) -> dict[Any, list[SloEntry]]:
    """SLOs whose math arrays have the same shape (rules, windows, history length): a row's
    result then depends on its own inputs alone, whoever else shares the call."""
    groups: dict[Any, list[SloEntry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.rules, history_span_s(entry.spec), nominal_window_s(entry.spec))].append(
            entry
        )
    return groups


def _without_field(message: str) -> str:
    return message.removeprefix(f"{URL_FIELD}: ")
