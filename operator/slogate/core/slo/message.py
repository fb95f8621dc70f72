"""The one-line human summary of an SLO and the small formatters behind it.

Example: ``Budget overspent (-29%); burning 3.2x over 1h; page-fast firing.`` The order is
the order an on-call engineer asks in: how much is left, how fast is it going, what is paging,
when does it run out. Formatting is per row (plain string work), after the vectorized numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from slogate.core.durations import humanize_seconds
from slogate.core.slo.forecast import Outlook


def format_percent(fraction: float) -> str:
    """``-0.29`` -> ``-29%``; one decimal below 10%, ``<0.1%`` for tiny non-zero values."""
    pct = fraction * 100.0
    if abs(pct) >= 9.95:
        return f"{pct:.0f}%"
    if pct != 0 and abs(pct) < 0.05:
        return "<0.1%" if pct > 0 else ">-0.1%"
    text = f"{pct:.1f}".rstrip("0").rstrip(".")
    return f"{'0' if text in ('-0', '') else text}%"


def format_burn(rate: float) -> str:
    """Burn rates as people quote them: ``14.4x``, ``3.2x``, ``0.25x``, ``120x``."""
    if rate >= 99.95:
        return f"{rate:.0f}x"
    if rate >= 0.995:
        return f"{rate:.1f}".rstrip("0").rstrip(".") + "x"
    if rate == 0:
        return "0x"
    return f"{rate:.2f}".rstrip("0").rstrip(".") + "x"


def exhausts_text(outlook: Outlook, seconds: float) -> str | None:
    """The EXHAUSTS column: ``2d 4h``, ``never``, ``exhausted``, ``after period end``."""
    if outlook is Outlook.EXHAUSTED:
        return "exhausted"
    if outlook is Outlook.WITHIN and math.isfinite(seconds):
        return humanize_seconds(max(seconds, 0.0))
    if outlook is Outlook.NEVER:
        return "never"
    if outlook is Outlook.AFTER_PERIOD_END:
        return "after period end"
    return None


def compose(
    *,
    remaining: float | None,
    window_label: str,
    calendar: bool,
    current_burn: float | None,
    current_label: str | None,
    firing: Sequence[str],
    outlook: Outlook,
    exhaustion_in_s: float | None,
) -> str:
    """The status ``message``."""
    if remaining is None:
        span = "since the period start" if calendar else f"over the {window_label} window"
        return f"No data {span}: the error budget is unknown."
    if outlook is Outlook.EXHAUSTED:
        parts = [
            f"Budget overspent ({format_percent(remaining)})"
            if remaining < -0.0005
            else "Budget exhausted (0%)"
        ]
    else:
        parts = [f"Budget {format_percent(remaining)} left"]
    if current_burn is not None and current_label is not None:
        parts.append(f"burning {format_burn(current_burn)} over {current_label}")
    if firing:
        parts.append(f"{', '.join(firing)} firing")
    if outlook is Outlook.WITHIN and exhaustion_in_s is not None:
        parts.append(f"exhausts in {humanize_seconds(max(exhaustion_in_s, 0.0))}")
    return "; ".join(parts) + "."
