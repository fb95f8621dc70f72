"""Classified Prometheus failures whose messages are fit for a Kubernetes condition.

Every failure the client can meet ends as one :class:`PrometheusError` with a small, fixed
``kind``: the controller maps the kind to a condition reason and decides what to do (keep the
last values, mark the SLO stale) without parsing text. Messages are one short line, never
carry credentials, and keep Prometheus's own words where they help a user fix something
(the PromQL parse error).
"""

from __future__ import annotations

import re
from enum import StrEnum

# Kubernetes allows 32 KiB in a condition message; a wall of HTML from a misrouted ingress
# helps nobody, so bodies are cut far below that.
BODY_LIMIT = 300
MESSAGE_LIMIT = 1000


class ErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    BAD_QUERY = "bad_query"
    UNAUTHORIZED = "unauthorized"
    SERVER_ERROR = "server_error"
    BAD_RESPONSE = "bad_response"

    @property
    def reason(self) -> str:
        """CamelCase reason for a status condition (``Ready=False``, ``Stale``)."""
        return _REASONS[self]

    @property
    def retryable(self) -> bool:
        """Whether a later attempt may succeed without anyone changing anything."""
        return self in (ErrorKind.UNREACHABLE, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR)


_REASONS: dict[ErrorKind, str] = {
    ErrorKind.UNREACHABLE: "PrometheusUnreachable",
    ErrorKind.TIMEOUT: "PrometheusTimeout",
    ErrorKind.BAD_QUERY: "QueryRejected",
    ErrorKind.UNAUTHORIZED: "PrometheusUnauthorized",
    ErrorKind.SERVER_ERROR: "PrometheusServerError",
    ErrorKind.BAD_RESPONSE: "BadPrometheusResponse",
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


def one_line(text: str, limit: int = BODY_LIMIT) -> str:
    """Collapse whitespace and cut ``text`` to ``limit`` characters, marking the cut."""
    flat = _WHITESPACE.sub(" ", text).strip()
    if len(flat) <= limit:
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
