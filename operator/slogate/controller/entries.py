"""What the controller remembers about each SLO between ticks.

An entry is derived from the resource (spec, generation) plus what evaluation learned: the
histogram bucket label for a latency threshold, the per-interval history of bad and total events,
the last status written. Restarting the controller loses entries, not data: the status is the
record, and history is rebuilt from Prometheus by one range query.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from slogate.core.durations import parse_duration
from slogate.core.objective import SloSpec
from slogate.core.policy import history_span_s, rules_for, windows_for
from slogate.core.promql import EventQueries, event_queries
from slogate.core.slo.rules import BurnRule
from slogate.core.status import Problem

FloatArray = npt.NDArray[np.float64]
#: The stored hourly history. float32 holds an hourly event count to 7 significant digits, a
#: relative error of 6e-8 on a budget (the math runs in float64); it halves the largest
#: per-SLO structure (2 x 721 values for 30 days: 5.8 KB instead of 11.5 KB).
HistArray = npt.NDArray[np.float32]
HIST_DTYPE = np.float32

BUDGET_GRID_S = 300  # least-squares fallback samples: one per 5 minutes ...
BUDGET_SAMPLES = 288  # ... over the last day

Key = tuple[str, str]  # (namespace, name)


class BudgetSamples:
    """Past ``consumed`` values on a grid of equal slots (slot = time // grid), newest last.

    A float array from the oldest kept slot to the newest written one (NaN where a slot was not
    sampled), at most ``capacity`` slots: 8 bytes a sample. A dict of floats costs ~120 bytes a
    sample, which at 288 samples and thousands of SLOs was the controller's largest structure.
    """

    __slots__ = ("capacity", "first", "values")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.first = 0  # slot of values[0]
        self.values = array("d")

    def __len__(self) -> int:
        return sum(1 for v in self.values if not math.isnan(v))

    def put(self, slot: int, value: float) -> None:
        """Record ``value`` for ``slot``; slots more than ``capacity`` before the newest are
        dropped."""
        values = self.values
        if not values:
            self.first = slot
            values.append(value)
            return
        if slot < self.first:
            if self.first + len(values) - slot > self.capacity:
                return  # older than anything kept
            values[:0] = array("d", [math.nan]) * (self.first - slot)
            self.first = slot
        end = self.first + len(values)
        if slot >= end:
            values.extend(array("d", [math.nan]) * (slot - end + 1))
        values[slot - self.first] = value
        excess = len(values) - self.capacity
        if excess > 0:
            del values[:excess]
            self.first += excess

    def get(self, slot: int) -> float:
        """The value recorded for ``slot``, NaN when none is kept."""
        i = slot - self.first
        return self.values[i] if 0 <= i < len(self.values) else math.nan

    def fill(self, out: FloatArray, first_slot: int) -> None:
        """Write the kept values into ``out[k]`` for slot ``first_slot + k`` (others untouched)."""
        lo = max(self.first, first_slot)
        hi = min(self.first + len(self.values), first_slot + out.shape[0])
        if lo < hi:
            out[lo - first_slot : hi - first_slot] = self.values[lo - self.first : hi - self.first]


@dataclass(slots=True)
class SloEntry:
    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: SloSpec
    rules: tuple[BurnRule, ...]
    windows_s: tuple[int, ...]  # every burn window evaluated, shortest first
    labels: dict[str, str]  # for gates that select objectives by label
    queries: EventQueries | None  # None until a latency threshold's bucket is resolved
    next_due: float = 0.0
    # Evaluated in a unit of its own (its PromQL was rejected in a batch, or broke a unit):
    # until its spec changes, it costs one request of its own instead of halving every batch.
    solo: bool = False
    # The last rejection and which field it was blamed on (asked once per rejection).
    blame: tuple[str, Problem] | None = None
    # Per-interval history (counts indicators): increases over buckets ending at hist_end.
    hist_end: float = math.nan
    hist_bad: HistArray | None = None
    hist_total: HistArray | None = None
    # Long windows of raw-query indicators, refreshed less often: window -> ratio.
    long_ratios: dict[int, float] = field(default_factory=dict)
    long_refreshed: float = -math.inf
    # Budget samples on a shared 5-minute grid for the least-squares forecast fallback.
    budget_samples: BudgetSamples = field(default_factory=lambda: BudgetSamples(BUDGET_SAMPLES))
    status: dict[str, Any] | None = None  # as last written (or found on the resource)
    last_write: float = -math.inf

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def ref(self) -> dict[str, Any]:
        """An object reference for Events."""
        return {
            "apiVersion": "slogate.dev/v1alpha1",
            "kind": "ServiceLevelObjective",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }

    @property
    def ratio_only(self) -> bool:
        return self.spec.indicator.query is not None

    @property
    def interval_s(self) -> int:
        return parse_duration(self.spec.evaluation.interval)


def new_entry(body: dict[str, Any], spec: SloSpec, previous: SloEntry | None) -> SloEntry:
    """An entry for ``body``; what the previous entry learned is kept if still valid."""
    meta = body.get("metadata") or {}
    rules = rules_for(spec)
    queries = None if spec.indicator.latency is not None else event_queries(spec.indicator)
    entry = SloEntry(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta.get("uid", ""),
        generation=meta.get("generation"),
        spec=spec,
        rules=rules,
        windows_s=windows_for(spec, rules),
        labels=dict(meta.get("labels") or {}),
        queries=queries,
        status=body.get("status") or (previous.status if previous else None),
    )
    if previous is not None:
        entry.last_write = previous.last_write
        same_events = previous.spec.indicator == spec.indicator and history_span_s(
            previous.spec
        ) == history_span_s(spec)
        if same_events:
            entry.queries = previous.queries
            entry.hist_end, entry.hist_bad, entry.hist_total = (
                previous.hist_end,
                previous.hist_bad,
                previous.hist_total,
            )
            entry.long_ratios, entry.long_refreshed = previous.long_ratios, previous.long_refreshed
            entry.budget_samples = previous.budget_samples
    return entry
