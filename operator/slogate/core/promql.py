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
from decimal import Decimal
from typing import Literal

from slogate.core.objective import Indicator
from slogate.core.specbase import (
    LABEL_NAME,
    MATCH_OP,
    METRIC_NAME,
    SELECTOR_PATTERN,
    STRING_LITERAL,
)

WINDOW = "{{window}}"
QUERY_LABEL = "slogate_q"

_SELECTOR_RE = re.compile(SELECTOR_PATTERN)
_NAME_RE = re.compile(rf"\s*(?P<name>{METRIC_NAME})")
_MATCHER_RE = re.compile(
    rf"(?P<label>{LABEL_NAME})\s*(?P<op>{MATCH_OP})\s*(?P<value>{STRING_LITERAL})"
)


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[str, ...]  # each ``label op "value"``, as written, without __name__

    def render(self, suffix: str = "", extra: str = "") -> str:
        parts = [*self.matchers, extra] if extra else list(self.matchers)
        return f"{self.name}{suffix}{{{','.join(parts)}}}" if parts else f"{self.name}{suffix}"


def parse_selector(text: str) -> Selector:
    """Split ``name{matchers}`` (or ``{__name__="name", ...}``) into name and matchers.

    Only what :data:`~slogate.core.specbase.SELECTOR_PATTERN` (the CRD's own pattern) accepts is
    parsed; the parts are re-assembled from their tokens, never pasted as a whole.
    """
    if not _SELECTOR_RE.match(text):
        raise ValueError(f"{text!r} is not a series selector")
    named = _NAME_RE.match(text)
    name = named.group("name") if named else ""
    matchers: list[str] = []
    for m in _MATCHER_RE.finditer(text, named.end() if named else 0):
        if m.group("label") == "__name__" and m.group("op") == "=" and not name:
            name = _unquote(m.group("value"))
            if not re.fullmatch(METRIC_NAME, name):
                raise ValueError(f"{text!r}: __name__ {name!r} is not a metric name")
            continue
        matchers.append(f"{m.group('label')}{m.group('op')}{m.group('value')}")
    if not name:
        raise ValueError(f"{text!r} has no metric name")
    return Selector(name, tuple(matchers))


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return body if literal[0] == "`" else re.sub(r"\\(.)", r"\1", body)


@dataclass(frozen=True)
class EventQueries:
    """Templates (with ``{{window}}``) for one SLO's events.

    ``kind == "counts"``: ``bad`` and ``total`` count events. ``kind == "ratio"``: ``bad`` is the
    error ratio itself and ``total`` is None (raw-query indicators).
    """

    kind: Literal["counts", "ratio"]
    bad: str
    total: str | None


Counting = Literal["increase", "rate"]


def _counted(selector: str, func: Counting) -> str:
    # The models refuse anything else; checked again because this text is pasted into PromQL.
    if not _SELECTOR_RE.match(selector):
        raise ValueError(f"{selector!r} is not a series selector")
    return f"sum({func}({selector.strip()}[{WINDOW}]))"


def event_queries(
    indicator: Indicator,
    le: str | None = None,
    *,
    func: Counting = "increase",
    le_matcher: str | None = None,
) -> EventQueries:
    """PromQL templates for ``indicator``: events in the window (``increase``) or per second
    (``rate``). Latency needs its threshold bucket: the exact ``le`` label value, or a matcher
    such as :func:`le_matcher` gives."""
    if indicator.ratio is not None:
        ratio = indicator.ratio
        total = _counted(ratio.total, func)
        if ratio.errors is not None:
            return EventQueries("counts", f"({_counted(ratio.errors, func)} or vector(0))", total)
        assert ratio.good is not None
        good = _counted(ratio.good, func)
        return EventQueries("counts", f"({total} - ({good} or vector(0)))", total)
    if indicator.latency is not None:
        if le_matcher is None:
            if le is None:
                raise ValueError(
                    "a latency indicator needs the le label value of its threshold bucket"
                )
            le_matcher = f'le="{le}"'
        sel = parse_selector(indicator.latency.histogram)
        total = _counted(sel.render("_count"), func)
        good = _counted(sel.render("_bucket", le_matcher), func)
        return EventQueries("counts", f"({total} - ({good} or vector(0)))", total)
    assert indicator.query is not None
    return EventQueries("ratio", f"({indicator.query.error_ratio.strip()})", None)


def bucket_bounds_query(indicator: Indicator) -> str:
    """The query that lists a histogram's ``le`` label values (to check the threshold)."""
    assert indicator.latency is not None
    sel = parse_selector(indicator.latency.histogram)
    return f"count by (le) ({sel.render('_bucket')})"


def le_matcher(threshold: float) -> str:
    """An ``le`` matcher for ``threshold`` however a client library wrote the bound: ``0.3``
    also as ``0.30``, ``1`` also as ``1.0`` (Python and Java clients), ``1e-05`` as Go writes
    it. Rules are generated without asking Prometheus, so the exact label value is unknown."""
    text = format(Decimal(repr(float(threshold))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    whole = "." not in text
    forms = [re.escape(text) + (r"(\.0*)?" if whole else "0*")]
    go_form = format(threshold, "g")
    if "e" in go_form:
        forms.append(re.escape(go_form))
    return f'le=~"{_escape("|".join(forms))}"'


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
