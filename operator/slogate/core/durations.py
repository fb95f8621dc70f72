"""Durations as SLO manifests write them: a positive integer and one unit, e.g. ``5m``, ``30d``.

One unit per duration keeps the syntax checkable by the CRD's OpenAPI pattern and by CEL, so the
API server and the pydantic models accept exactly the same strings. Prometheus accepts the same
form in range selectors, so a window can be put into PromQL verbatim.
"""

from __future__ import annotations

import re

UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

# Shared with the CRD schema (see slogate.core.crd): keep the two in one place.
DURATION_PATTERN = r"^[1-9][0-9]{0,5}(s|m|h|d|w)$"
DURATION_MAX_LENGTH = 7
_DURATION_RE = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> int:
    """Seconds in ``text``; raises ValueError with a message a manifest author can act on."""
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise ValueError(
            f"{text!r} is not a duration: write a whole number and one unit of s, m, h, d or w "
            "(for example 5m, 1h, 30d)"
        )
    return int(text[:-1]) * UNIT_SECONDS[text[-1]]


def format_duration(seconds: int) -> str:
    """The shortest exact single-unit form of ``seconds`` (``86400`` -> ``1d``)."""
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}s")
    for unit in ("w", "d", "h", "m", "s"):
        size = UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds has an 's' form")


def humanize_seconds(seconds: float) -> str:
    """A short human reading of a span, for messages and the EXHAUSTS column (``2d 4h``)."""
    if seconds < 0:
        raise ValueError("humanize_seconds takes a non-negative span")
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m" if mins else "<1m"
