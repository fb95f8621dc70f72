"""Firing rules and the risk level.

A rule fires when the burn over its long window *and* over its short window are both strictly
above its factor (the Workbook's ``>``). "Strictly" is taken one part per billion above the
factor: ``b = 1 - 99.9/100`` is not exactly 0.001 in binary, so a burn of exactly 14.4 computes
as 14.4000000000016 and would otherwise fire depending on rounding.

A window without data never fires: an outage of the
metrics pipeline must not page anyone, and UNKNOWN/Stale already say the data is missing.

Risk, most severe first (``docs/math.md``, "Risk"):

- ``UNKNOWN``: no usable data over the compliance window (no budget to speak of);
- ``FREEZE``: the budget is exhausted, or a page rule fires;
- ``DANGER``: a ticket rule fires, or the forecast spends the budget within
  ``Thresholds.danger_within_s`` (3 days);
- ``OBSERVE``: one of the rules' long windows burns above ``Thresholds.observe_burn_rate`` (1);
- ``SAFE``: otherwise.

Burn windows without data do not make an SLO UNKNOWN on their own: with a known budget the
verdict still stands on the budget and on whatever windows were measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from slogate.core.slo.inputs import BoolArray, FloatArray, Int8Array
from slogate.core.slo.rules import BurnRule

#: Relative margin above a rule's factor before it counts as exceeded (see module doc).
FIRING_RTOL = 1e-9


class Risk(StrEnum):
    SAFE = "SAFE"
    OBSERVE = "OBSERVE"
    DANGER = "DANGER"
    FREEZE = "FREEZE"
    UNKNOWN = "UNKNOWN"


#: Risk codes in result arrays index this tuple.
RISK_BY_CODE: tuple[Risk, ...] = (Risk.UNKNOWN, Risk.SAFE, Risk.OBSERVE, Risk.DANGER, Risk.FREEZE)
_UNKNOWN, _SAFE, _OBSERVE, _DANGER, _FREEZE = range(5)


def firing(
    burn: FloatArray, columns: Sequence[tuple[int, int]], rules: Sequence[BurnRule]
) -> BoolArray:
    """[N, R] booleans: rule r fires for SLO i. ``columns[r]`` are its (long, short) columns."""
    n = burn.shape[0]
    out = np.zeros((n, len(rules)), dtype=np.bool_)
    with np.errstate(invalid="ignore"):
        for r, (rule, (long_col, short_col)) in enumerate(zip(rules, columns, strict=True)):
            bar = rule.burn_rate * (1.0 + FIRING_RTOL)
            out[:, r] = (burn[:, long_col] > bar) & (burn[:, short_col] > bar)
    return out


def classify(
    *,
    known: BoolArray,
    exhausted: BoolArray,
    page_firing: BoolArray,
    ticket_firing: BoolArray,
    exhausts_soon: BoolArray,
    long_burn_max: FloatArray,
    observe_burn_rate: float,
) -> Int8Array:
    """Risk codes (index into ``RISK_BY_CODE``) per SLO."""
    with np.errstate(invalid="ignore"):
        observe = long_burn_max > observe_burn_rate
    code = np.full(known.shape, _SAFE, dtype=np.int8)
    code[observe] = _OBSERVE
    code[ticket_firing | exhausts_soon] = _DANGER
    code[exhausted | page_firing] = _FREEZE
    code[~known] = _UNKNOWN
    return code
