"""Turn a manifest document into per-field error lines, as the CLI and tests print them."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from slogate.core.resources import parse_resource
from slogate.core.specbase import RULE_FIELD_PATHS


def field_errors(doc: Any) -> list[str]:
    """``["spec.target: must be less than 100", ...]``; empty when the document is valid."""
    if not isinstance(doc, dict):
        return [f"document: expected a mapping (a Kubernetes object), got {type(doc).__name__}"]
    try:
        parse_resource(doc)
    except ValidationError as exc:
        return [_line(err) for err in exc.errors(include_url=False)]
    except ValueError as exc:
        return [str(exc)]
    return []


def _line(err: Any) -> str:
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    path = path.lstrip(".")
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    path += RULE_FIELD_PATHS.get(msg, "")
    if err["type"] == "extra_forbidden":
        msg = "unknown field; check the spelling against `kubectl explain`"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "string_pattern_mismatch" and path.split(".")[-1] in _PATTERN_HINTS:
        msg = f"{_PATTERN_HINTS[path.split('.')[-1]]} (got {err.get('input')!r})"
    return f"{path or 'document'}: {msg}"


_DURATION_HINT = "write a whole number and one unit of s, m, h, d or w, like 5m, 1h or 30d"
_SELECTOR_HINT = (
    'write a counter series selector such as http_requests_total{job="api"}; '
    "slogate adds increase() itself, and indicator.query takes free-form PromQL"
)
_PATTERN_HINTS = {
    "window": _DURATION_HINT,
    "interval": _DURATION_HINT,
    "long": _DURATION_HINT,
    "short": _DURATION_HINT,
    "maxDuration": _DURATION_HINT,
    "errors": _SELECTOR_HINT,
    "good": _SELECTOR_HINT,
    "total": _SELECTOR_HINT,
    "histogram": "write the histogram's base metric name, optionally with label matchers, such "
    'as http_request_duration_seconds{job="api"}',
    "name": "use lowercase letters, digits, '-' and '.', starting and ending alphanumeric",
    "url": "write an http:// or https:// base URL without user:password@, query string or "
    "fragment, like http://thanos-query.monitoring:9090",
}
