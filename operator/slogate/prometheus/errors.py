"""Classified Prometheus failures whose messages are fit for a Kubernetes condition.

Every failure the client can meet ends as one :class:`PrometheusError` with a small, fixed
``kind``: the controller maps the kind to a condition reason and decides what to do (keep the
last values, mark the SLO stale) without parsing text. Messages are one short line, never
carry credentials, and are printable: whatever a backend sent is cut to one line of at most
``BODY_LIMIT`` characters with control characters and escape sequences removed, so it cannot
forge extra lines or hide text. Whether a backend's words appear at all is the client's
decision (``PrometheusConfig.echo_errors``); this module only makes what is kept harmless.
"""

from __future__ import annotations

import re
from enum import StrEnum

# Kubernetes allows 32 KiB in a condition message; a wall of HTML from a misrouted ingress
# helps nobody, so bodies are cut far below that.
BODY_LIMIT = 300
MESSAGE_LIMIT = 1000
# The errorType values the Prometheus HTTP API documents. For a backend whose words may not be
# quoted, one of these is all of its answer that reaches a message.
PROMETHEUS_ERROR_TYPES = frozenset(
    {
        "bad_data",
        "timeout",
        "canceled",
        "execution",
        "internal",
        "unavailable",
        "not_found",
        "not_acceptable",
    }
)


class ErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BAD_QUERY = "bad_query"
    UNAUTHORIZED = "unauthorized"
    SERVER_ERROR = "server_error"
    BAD_RESPONSE = "bad_response"
    RESPONSE_TOO_LARGE = "response_too_large"

    @property
    def reason(self) -> str:
        """CamelCase reason for a status condition (``Ready=False``, ``Stale``)."""
        return _REASONS[self]


_REASONS: dict[ErrorKind, str] = {
    ErrorKind.UNREACHABLE: "PrometheusUnreachable",
    ErrorKind.TIMEOUT: "PrometheusTimeout",
    ErrorKind.BAD_QUERY: "QueryRejected",
    ErrorKind.UNAUTHORIZED: "PrometheusUnauthorized",
    ErrorKind.SERVER_ERROR: "PrometheusServerError",
    ErrorKind.BAD_RESPONSE: "BadPrometheusResponse",
    ErrorKind.RESPONSE_TOO_LARGE: "PrometheusResponseTooLarge",
}


class PrometheusError(Exception):
    """A query failed; ``str(err)`` is a one-line message safe to show in status and Events."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.kind = ErrorKind(kind)
        self.message = one_line(message, MESSAGE_LIMIT)
        self.status_code = status_code
        # Prometheus's own errorType (bad_data, execution, timeout, ...), when it sent one.
        self.error_type = error_type
        self.attempts = attempts
        super().__init__(self.message)

    @property
    def reason(self) -> str:
        return self.kind.reason

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"PrometheusError({self.kind.value!r}, {self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes would be lost by the default Exception pickling.
        return (
            _rebuild,
            (self.kind, self.message, self.status_code, self.error_type, self.attempts),
        )


def _rebuild(
    kind: ErrorKind,
    message: str,
    status_code: int | None,
    error_type: str | None,
    attempts: int,
) -> PrometheusError:
    return PrometheusError(
        kind, message, status_code=status_code, error_type=error_type, attempts=attempts
    )


_WHITESPACE = re.compile(r"\s+")
# Terminal escape sequences (colours, cursor moves): removing only the ESC would leave "[31m".
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)?")


def one_line(text: str, limit: int = BODY_LIMIT) -> str:
    """Collapse whitespace, drop what is not printable and cut ``text`` to ``limit`` characters.

    Control and format characters (escape sequences, bidi overrides, zero-width characters) are
    removed rather than replaced: a condition message is read by people and by ``kubectl``.
    """
    # A backend's error string can be megabytes; only the start can survive the cut anyway.
    window = max(limit, 0) * 4 + 64
    cut = len(text) > window
    chars = _ESCAPES.sub("", text[:window])
    kept = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in chars)
    flat = _WHITESPACE.sub(" ", kept).strip()
    if len(flat) <= limit and not cut:
        return flat
    return flat[: max(limit - 1, 0)].rstrip() + "…"


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret with ``<redacted>``.

    A last line of defence: messages are built without credentials, but a server or a proxy
    may echo a header back in its error body.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text
