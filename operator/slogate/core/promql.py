"""PromQL built from an SLO's indicator: pure string work, no I/O.

Every indicator becomes two templates, ``bad`` and ``total`` events over ``{{window}}``, built on
``increase()`` so counter resets are handled by Prometheus. Many such expressions are batched into
one request with :func:`batch`: each is tagged with a ``slogate_q`` label by ``label_replace`` and
the parts are joined with ``or``, so a single instant query answers every window of many SLOs.

Missing bad-event series are common (a ``code="500"`` series appears only after the first server
error), so bad counts default to 0 with ``or vector(0)``; a missing *total* stays missing, which
the math reads as "no data".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from slogate.core.objective import Indicator

WINDOW = "{{window}}"
QUERY_LABEL = "slogate_q"

_SELECTOR_RE = re.compile(r"^\s*(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?\s*(\{(?P<matchers>.*)\})?\s*$")
_NAME_MATCHER_RE = re.compile(r'__name__\s*=\s*"(?P<name>[^"]*)"\s*,?')


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: str  # the text between the braces, without __name__

    def render(self, suffix: str = "", extra: str = "") -> str:
        parts = [m for m in (self.matchers.strip().rstrip(","), extra) if m]
        return f"{self.name}{suffix}{{{','.join(parts)}}}" if parts else f"{self.name}{suffix}"


def parse_selector(text: str) -> Selector:
    """Split ``name{matchers}`` (or ``{__name__="name", ...}``) into name and matchers."""
    match = _SELECTOR_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a series selector")
    name = match.group("name") or ""
    matchers = (match.group("matchers") or "").strip()
    if not name:
        named = _NAME_MATCHER_RE.search(matchers)
        if not named:
            raise ValueError(f"{text!r} has no metric name")
        name = named.group("name")
        matchers = (matchers[: named.start()] + matchers[named.end() :]).strip().strip(",")
    return Selector(name, matchers)


@dataclass(frozen=True)
class EventQueries:
    """Templates (with ``{{window}}``) for one SLO's events.

    ``kind == "counts"``: ``bad`` and ``total`` count events. ``kind == "ratio"``: ``bad`` is the
    error ratio itself and ``total`` is None (raw-query indicators).
    """

    kind: Literal["counts", "ratio"]
    bad: str
    total: str | None


def _increase(selector: str) -> str:
    return f"sum(increase({selector}[{WINDOW}]))"


def event_queries(indicator: Indicator, le: str | None = None) -> EventQueries:
    """PromQL templates for ``indicator``; latency needs the bucket's exact ``le`` label value."""
    if indicator.ratio is not None:
        ratio = indicator.ratio
        total = _increase(ratio.total.strip())
        if ratio.errors is not None:
            return EventQueries(
                "counts", f"({_increase(ratio.errors.strip())} or vector(0))", total
            )
        assert ratio.good is not None
        return EventQueries(
            "counts", f"({total} - ({_increase(ratio.good.strip())} or vector(0)))", total
        )
    if indicator.latency is not None:
        if le is None:
            raise ValueError("a latency indicator needs the le label value of its threshold bucket")
        sel = parse_selector(indicator.latency.histogram)
        total = _increase(sel.render("_count"))
        good = _increase(sel.render("_bucket", f'le="{le}"'))
        return EventQueries("counts", f"({total} - ({good} or vector(0)))", total)
    assert indicator.query is not None
    return EventQueries("ratio", f"({indicator.query.error_ratio.strip()})", None)


def bucket_bounds_query(indicator: Indicator) -> str:
    """The query that lists a histogram's ``le`` label values (to check the threshold)."""
    assert indicator.latency is not None
    sel = parse_selector(indicator.latency.histogram)
    return f"count by (le) ({sel.render('_bucket')})"


def match_bucket(threshold: float, le_values: Iterable[str]) -> str | None:
    """The ``le`` label value equal to ``threshold`` as a number (``0.3`` matches ``"0.30"``)."""
    for value in le_values:
        try:
            bound = float(value)
        except ValueError:
            continue
        if abs(bound - threshold) <= 1e-9 * max(1.0, abs(threshold)):
            return value
    return None


def render(template: str, window: str) -> str:
    return template.replace(WINDOW, window)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def tag(expr: str, key: str) -> str:
    """``expr`` with every result series labelled ``slogate_q="key"``."""
    return f'label_replace({expr}, "{QUERY_LABEL}", "{_escape(key)}", "", "")'


def batch(parts: Sequence[tuple[str, str]]) -> str:
    """One PromQL expression answering every ``(key, expr)``; results carry ``slogate_q=key``."""
    if not parts:
        raise ValueError("batch needs at least one expression")
    return " or ".join(tag(expr, key) for key, expr in parts)
