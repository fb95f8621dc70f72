"""Times as text, the way Kubernetes writes them: RFC 3339 in UTC with a trailing ``Z``.

One place, so that status fields, annotations, Events and log lines all read alike and every
one of them parses back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


class NoTimeZone(ValueError):
    """An RFC 3339 text without an offset: it names no moment until a zone is assumed."""


def rfc3339(epoch: float) -> str:
    """Whole seconds (status fields, annotations): ``2026-11-26T09:30:00Z``."""
    return _text(dt.datetime.fromtimestamp(round(epoch), tz=dt.UTC))


def rfc3339_micro(epoch: float) -> str:
    """Always six digits of microseconds: Events' ``eventTime`` is a MicroTime, which the API
    server parses with exactly that layout (``isoformat`` would drop ``.000000``)."""
    return _text(dt.datetime.fromtimestamp(epoch, tz=dt.UTC), "microseconds")


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch; ValueError for anything else, NoTimeZone without an offset."""
    moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise NoTimeZone(f"{text!r} has no time zone")
    return moment.timestamp()


def parse_rfc3339_or_none(text: Any) -> float | None:
    """``parse_rfc3339`` for fields that may be missing or damaged: None instead of an error."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def _text(moment: dt.datetime, timespec: str = "seconds") -> str:
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
