"""Pure pieces of the benchmark report: percentiles, histogram quantiles, Markdown tables.

Nothing here does I/O, so ``tests/unit/test_bench_smoke.py`` can check it in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Prometheus-style quantile (0..1) from cumulative ``(upper_bound, count)`` buckets.

    Linear interpolation inside the bucket, like PromQL's ``histogram_quantile``; a quantile in
    the ``+Inf`` bucket returns the highest finite bound. NaN without observations.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def bucket_deltas(
    after: Mapping[float, float], before: Mapping[float, float]
) -> list[tuple[float, float]]:
    """Cumulative bucket counts observed between two scrapes of the same histogram."""
    return [(le, after[le] - before.get(le, 0.0)) for le in sorted(after)]


def fmt(value: float | int | None, digits: int = 2) -> str:
    """A number for a table: thousands separators, ``-`` for missing, no scientific notation."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ms(seconds: float | None) -> str:
    """Seconds shown as milliseconds (signed differences keep their sign)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:.1f} ms" if abs(seconds) < 10 else f"{seconds:.1f} s"


def ratio(ours: float, theirs: float) -> str:
    """``theirs / ours`` as ``"23.4x fewer"``; the baseline is the denominator's owner."""
    if not ours or not math.isfinite(ours) or not math.isfinite(theirs):
        return "-" if not theirs else "∞ fewer"
    factor = theirs / ours
    return f"{factor:,.1f}x fewer" if factor >= 1 else f"{1 / factor:,.1f}x more"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def render_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are ``str()``-ed and pipes escaped."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    for row in rows:
        cells = [cell(v) for v in row]
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells, table has {len(headers)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Section:
    """One part of the report: a heading, prose before and after, and tables."""

    title: str
    intro: str = ""
    tables: list[tuple[str, Sequence[str], list[Sequence[object]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    code: str = ""

    def table(self, caption: str, headers: Sequence[str], rows: list[Sequence[object]]) -> None:
        self.tables.append((caption, headers, rows))

    def render(self) -> str:
        parts = [f"## {self.title}"]
        if self.intro:
            parts.append(self.intro.strip())
        for caption, headers, rows in self.tables:
            if caption:
                parts.append(f"**{caption}**")
            parts.append(render_table(headers, rows))
        if self.code:
            parts.append("```\n" + self.code.rstrip() + "\n```")
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes))
        return "\n\n".join(parts)


@dataclass(frozen=True)
class Target:
    """One target of issue 8 and where this run left it."""

    name: str
    goal: str
    measured: str
    ok: bool | None


def targets_table(targets: Sequence[Target]) -> tuple[Sequence[str], list[Sequence[object]]]:
    headers = ("target", "goal", "measured", "result")
    return headers, [(t.name, t.goal, t.measured, verdict(t.ok)) for t in targets]


def render_document(
    title: str, header: Mapping[str, str], preface: str, sections: Sequence[Section]
) -> str:
    """The whole ``docs/benchmarks.md``."""
    lines = [f"# {title}", "", preface.strip(), ""]
    lines.append(render_table(("", ""), [(k, v) for k, v in header.items()]))
    body = "\n\n".join(s.render() for s in sections)
    return "\n".join(lines) + "\n\n" + body + "\n"
