"""Async Prometheus HTTP API client: instant and range queries, retries, a concurrency bound.

This is the only place the operator talks to Prometheus (or Thanos Query, Mimir, Cortex,
VictoriaMetrics: anything that speaks ``/api/v1/query`` and ``/api/v1/query_range``). It turns
every failure into a classified :class:`~slogate.prometheus.errors.PrometheusError` and never lets a
credential reach a message or a log line.

A backend may be run by a tenant (an SLO's own ``spec.prometheus.url``), so nothing it sends is
trusted: bodies are read as a stream and cut off at ``max_response_bytes`` (compressed answers
are inflated under the same bound), and with ``echo_errors=False`` no word of the backend's
reaches an error message. Which backend gets which config is decided by
:mod:`slogate.prometheus.pool`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import logging
import math
import os
import random
import re
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from slogate import __version__
from slogate.prometheus.errors import (
    BODY_LIMIT,
    PROMETHEUS_ERROR_TYPES,
    ErrorKind,
    PrometheusError,
    one_line,
    redact,
)

log = logging.getLogger(__name__)

Observer = Callable[[str, str, float], None]
"""``(endpoint, outcome, seconds)`` once per HTTP attempt; outcome is ``success`` or a kind."""

FloatArray = npt.NDArray[np.float64]

_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# RFC 9110 token characters; anything else in a header name is a caller's mistake.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Error answers are small; a few KiB is plenty to find Prometheus's errorType in.
_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class PrometheusConfig:
    """How to reach one Prometheus-compatible query endpoint.

    ``url`` may carry a path prefix (``http://thanos-query:9090/prefix``). Credential files are
    read on every request, so a rotated service-account token or password works without a
    restart.
    """

    url: str
    timeout_s: float = 10.0
    retries: int = 3
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0
    max_concurrency: int = 8
    bearer_token_file: str | None = None
    basic_auth_username: str | None = None
    basic_auth_password_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    # Extra form parameters on every query, e.g. Thanos's partial_response=false.
    params: Mapping[str, str] = field(default_factory=dict)
    # Honour HTTP(S)_PROXY / NO_PROXY and SSL_CERT_FILE like other HTTP clients do.
    trust_env: bool = True
    # A bigger answer fails (RESPONSE_TOO_LARGE) instead of filling the operator's memory.
    max_response_bytes: int = 8 * 1024 * 1024
    # Whether error messages may quote the backend (its error text, body, redirect target).
    # False for a backend the operator does not run: its words would land in status conditions.
    echo_errors: bool = True

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "Prometheus URL must be http(s)://host[:port][/prefix], "
                f"got {_strip_userinfo(self.url)!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError("Prometheus URL must not carry a query string or fragment")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not 0 <= self.backoff_base_s <= self.backoff_cap_s:
            raise ValueError("need 0 <= backoff_base_s <= backoff_cap_s")
        if (self.basic_auth_username is None) != (self.basic_auth_password_file is None):
            raise ValueError("basic auth needs both basic_auth_username and password file")
        if self.bearer_token_file and self.basic_auth_username is not None:
            raise ValueError("use either a bearer token or basic auth, not both")
        if self.ca_file and self.insecure_skip_verify:
            raise ValueError("ca_file and insecure_skip_verify exclude each other")
        if self.max_response_bytes < 1:
            raise ValueError("max_response_bytes must be >= 1")
        # A caller's dict must not change a frozen config behind its back.
        object.__setattr__(self, "headers", checked_headers(self.headers))
        object.__setattr__(self, "params", dict(self.params))
        reserved = {"query", "time", "start", "end", "step", "timeout", "stats"} & set(self.params)
        if reserved:
            raise ValueError(f"params must not set {sorted(reserved)}; the client sets them")

    def __hash__(self) -> int:
        # Hashable so the operator can keep one client per distinct configuration.
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return hash(tuple(frozenset(v.items()) if isinstance(v, Mapping) else v for v in values))

    @property
    def safe_url(self) -> str:
        """``url`` without any ``user:password@`` part, for messages and logs."""
        return _strip_userinfo(self.url)

    def __repr__(self) -> str:
        # Header values (an Authorization someone put in ``headers``) and URL userinfo stay out
        # of reprs, which end up in logs and tracebacks.
        return (
            f"PrometheusConfig(url={self.safe_url!r}, timeout_s={self.timeout_s}, "
            f"retries={self.retries}, max_concurrency={self.max_concurrency}, "
            f"bearer_token_file={self.bearer_token_file!r}, "
            f"basic_auth_username={self.basic_auth_username!r}, ca_file={self.ca_file!r}, "
            f"insecure_skip_verify={self.insecure_skip_verify}, headers={sorted(self.headers)}, "
            f"params={sorted(self.params)}, max_response_bytes={self.max_response_bytes}, "
            f"echo_errors={self.echo_errors})"
        )


def checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers``; ``ValueError`` (naming the header, never its value) if one is bad.

    Checked up front: a value with a line break or a non-ASCII character would otherwise fail
    deep inside the HTTP library, looking like an unreachable server.
    """
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"header name {one_line(str(name), 60)!r} is not an HTTP token")
        if not isinstance(value, str) or not all(" " <= c <= "~" or c == "\t" for c in value):
            raise ValueError(f"header {name} must be printable ASCII on one line")
        checked[name] = value
    return checked


def _strip_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class ResultType(StrEnum):
    VECTOR = "vector"
    MATRIX = "matrix"
    SCALAR = "scalar"


@dataclass(frozen=True)
class Sample:
    """One instant-vector element (or a scalar result, with empty labels)."""

    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class RangeSeries:
    """One range-query series; ``timestamps`` (seconds) and ``values`` are float64 arrays."""

    labels: Mapping[str, str]
    timestamps: FloatArray
    values: FloatArray


@dataclass(frozen=True)
class QueryResult:
    """A successful query. Values may be NaN or ±Inf, as Prometheus sent them: callers decide."""

    result_type: ResultType
    samples: tuple[Sample, ...] = ()
    series: tuple[RangeSeries, ...] = ()
    warnings: tuple[str, ...] = ()
    # From ``stats=all``; None when not asked for or when the server does not report them.
    total_queryable_samples: int | None = None
    peak_samples: int | None = None

    def one(self) -> float | None:
        """The value of a result with at most one sample: None when empty.

        Raises ``ValueError`` for several samples: the query was meant to aggregate and did not.
        """
        if len(self.samples) > 1:
            raise ValueError(f"expected at most one sample, got {len(self.samples)}")
        return self.samples[0].value if self.samples else None


def is_finite(value: float | None) -> bool:
    """True for an ordinary number; False for None, NaN, +Inf and -Inf."""
    return value is not None and math.isfinite(value)


_ENDPOINT_QUERY = "query"
_ENDPOINT_RANGE = "query_range"
_INSTANT_TYPES = (ResultType.VECTOR, ResultType.SCALAR)
_RANGE_TYPES = (ResultType.MATRIX,)


class PrometheusClient:
    """``async with PrometheusClient(config) as prom: await prom.instant("up")``.

    Connections are opened on first use. :meth:`retire` closes them once no query is using
    them, without breaking one that is; a retired client still answers (reconnecting, and
    letting go again afterwards), so a caller holding one never meets a closed client.
    """

    def __init__(self, config: PrometheusConfig, observer: Observer | None = None) -> None:
        self.config = config
        self.observer = observer
        self.request_count = 0
        self._base = config.url.rstrip("/")
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        self._http: httpx.AsyncClient | None = None
        self._in_flight = 0
        self._retired = False
        self._closed = False

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def in_flight(self) -> int:
        """Queries in progress, including those sleeping between retries."""
        return self._in_flight

    @property
    def connected(self) -> bool:
        """Whether the client holds an HTTP connection pool (sockets) right now."""
        return self._http is not None

    async def aclose(self) -> None:
        """Close now; queries still running fail. Later queries raise ``RuntimeError``."""
        self._closed = True
        await self._release()

    def retire(self) -> asyncio.Task[None] | None:
        """Let go of the connections as soon as no query uses them, now or later.

        Returns the task closing them when the client is idle (call from the event loop;
        without a running loop the idle connections are left to garbage collection), or None
        when there is nothing to close yet: the last running query closes them as it ends.
        """
        self._retired = True
        if self._in_flight or self._http is None:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        http, self._http = self._http, None
        return loop.create_task(_close_quietly(http))

    async def _release(self) -> None:
        # Swapped out before the await: a query starting meanwhile opens a fresh pool instead
        # of one being closed under it.
        http, self._http = self._http, None
        if http is not None:
            await _close_quietly(http)

    def _connections(self) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("PrometheusClient is closed")
        if self._http is None:
            cfg = self.config
            verify: ssl.SSLContext | bool = False
            if cfg.ca_file:
                verify = _ca_context(cfg.ca_file)
            elif not cfg.insecure_skip_verify:
                verify = _system_tls(cfg.trust_env)
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.timeout_s),
                limits=httpx.Limits(
                    max_connections=cfg.max_concurrency,
                    max_keepalive_connections=cfg.max_concurrency,
                ),
                verify=verify,
                trust_env=cfg.trust_env,
                follow_redirects=False,
                headers={"User-Agent": f"slogate/{__version__}", **cfg.headers},
            )
        return self._http

    async def instant(
        self,
        query: str,
        at: float | None = None,
        *,
        stats: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> QueryResult:
        """Evaluate ``query`` at ``at`` (seconds since the epoch; default: server's now).

        ``headers`` are sent with this query only, over the config's own (e.g. a Mimir tenant,
        ``{"X-Scope-OrgID": namespace}``); credentials from the config's files still win.
        """
        form = {"query": query}
        if at is not None:
            form["time"] = _fmt_time(at)
        return await self._post(_ENDPOINT_QUERY, form, stats, _INSTANT_TYPES, headers)

    async def range(
        self,
        query: str,
        start: float,
        end: float,
        step: float,
        *,
        stats: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> QueryResult:
        """Evaluate ``query`` at ``start, start + step, ... <= end``; returns matrix series.

        ``headers`` as for :meth:`instant`.
        """
        if not step > 0 or not end >= start:
            raise ValueError(f"need step > 0 and end >= start, got {start=}, {end=}, {step=}")
        form = {
            "query": query,
            "start": _fmt_time(start),
            "end": _fmt_time(end),
            "step": _fmt_time(step),
        }
        return await self._post(_ENDPOINT_RANGE, form, stats, _RANGE_TYPES, headers)

    async def _post(
        self,
        endpoint: str,
        form: dict[str, str],
        stats: bool,
        expected: tuple[ResultType, ...],
        headers: Mapping[str, str] | None,
    ) -> QueryResult:
        cfg = self.config
        extra = checked_headers(headers or {})
        if self._closed:
            raise RuntimeError("PrometheusClient is closed")
        # Prometheus stops evaluating once the client has given up, instead of burning CPU.
        form = {**cfg.params, **form, "timeout": _fmt_time(cfg.timeout_s)}
        if stats:
            form["stats"] = "all"
        url = f"{self._base}/api/v1/{endpoint}"
        attempts = cfg.retries + 1
        self._in_flight += 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    return await self._attempt(endpoint, url, form, extra, attempt, expected)
                except _Retryable as retry:
                    if attempt == attempts:
                        raise retry.error from None
                    delay = _backoff(cfg, attempt, retry.retry_after_s)
                    log.debug(
                        "Prometheus %s attempt %d/%d failed (%s); retrying in %.2fs",
                        endpoint,
                        attempt,
                        attempts,
                        retry.error,
                        delay,
                    )
                    await asyncio.sleep(delay)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._in_flight -= 1
            if self._retired and not self._in_flight:
                await self._release()

    async def _attempt(
        self,
        endpoint: str,
        url: str,
        form: dict[str, str],
        extra: dict[str, str],
        attempt: int,
        expected: tuple[ResultType, ...],
    ) -> QueryResult:
        cfg = self.config
        # The semaphore is taken per attempt, so a query sleeping between retries does not
        # hold a slot other queries could use.
        async with self._semaphore:
            # Credentials are read before the clock starts; a missing file fails at once.
            auth, secrets = self._auth(extra)
            # The client inflates answers itself (under the size bound), so it asks only for
            # what it can inflate; brotli or zstd would otherwise be offered when installed.
            headers = {**extra, **auth, "Accept-Encoding": "gzip"}
            http = self._connections()
            self.request_count += 1
            started = time.monotonic()
            outcome = "success"
            try:
                try:
                    # httpx's timeout bounds each phase; this bounds the whole attempt, body
                    # included, so a server that trickles bytes cannot hold a tick forever.
                    async with (
                        asyncio.timeout(cfg.timeout_s),
                        http.stream("POST", url, data=form, headers=headers) as response,
                    ):
                        status = response.status_code
                        body = await self._read_body(response, secrets, attempt)
                except (TimeoutError, httpx.TimeoutException) as exc:
                    phase = (
                        "accept a connection" if isinstance(exc, httpx.ConnectTimeout) else "answer"
                    )
                    raise _Retryable(
                        self._error(
                            ErrorKind.TIMEOUT,
                            f"did not {phase} within {cfg.timeout_s:g}s",
                            secrets,
                            attempt,
                        )
                    ) from None
                except httpx.TransportError as exc:
                    tls = _tls_verification_error(exc)
                    if tls is not None:
                        # A certificate the CA does not sign will not sign itself on retry.
                        raise self._error(
                            ErrorKind.UNREACHABLE,
                            f"failed TLS verification: {tls}; check ca_file",
                            secrets,
                            attempt,
                        ) from None
                    raise _Retryable(
                        self._error(
                            ErrorKind.UNREACHABLE,
                            f"is unreachable: {_describe(exc, cfg.echo_errors)}",
                            secrets,
                            attempt,
                        )
                    ) from None
                payload = self._interpret(status, response.headers, body, secrets, attempt)
                try:
                    return _parse(payload, expected, "stats" in form, cfg.echo_errors)
                except _BadShape as exc:
                    raise self._error(
                        ErrorKind.BAD_RESPONSE, str(exc), secrets, attempt, status_code=200
                    ) from None
            except _Retryable as retry:
                outcome = retry.error.kind.value
                raise
            except PrometheusError as err:
                outcome = err.kind.value
                raise
            finally:
                self._observe(endpoint, outcome, time.monotonic() - started)

    async def _read_body(self, response: httpx.Response, secrets: list[str], attempt: int) -> bytes:
        """The body, inflated, or RESPONSE_TOO_LARGE once it passes ``max_response_bytes``.

        An error answer is only read as far as a message needs; its status is what counts.
        """
        limit = self.config.max_response_bytes
        status = response.status_code

        def fail(kind: ErrorKind, message: str) -> PrometheusError:
            return self._error(kind, message, secrets, attempt, status_code=status)

        # RESPONSE_TOO_LARGE is raised plainly, not as _Retryable: the same query gives the
        # same answer, and reading it again costs the same bandwidth.
        if status != 200:
            limit = min(limit, _ERROR_BODY_BYTES)
        elif (_content_length(response.headers) or 0) > limit:
            raise fail(ErrorKind.RESPONSE_TOO_LARGE, self._too_large())
        encoding = response.headers.get("content-encoding", "")
        try:
            inflate = _Inflater(encoding)
        except ValueError:
            shown = f" {one_line(encoding, 40)!r}" if self.config.echo_errors else ""
            raise fail(
                ErrorKind.BAD_RESPONSE, f"answered with Content-Encoding{shown}; ask for gzip"
            ) from None
        chunks: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            try:
                data = inflate(raw, limit - size)
            except zlib.error:
                raise fail(ErrorKind.BAD_RESPONSE, "answered a corrupt gzip body") from None
            size += len(data)
            if size > limit:
                if status != 200:
                    chunks.append(data[: len(data) - (size - limit)])
                    break
                raise fail(ErrorKind.RESPONSE_TOO_LARGE, self._too_large())
            chunks.append(data)
        return b"".join(chunks)

    def _too_large(self) -> str:
        return (
            f"answered more than {_fmt_size(self.config.max_response_bytes)}, the most the "
            "operator reads from one response; aggregate the query (fewer series, a coarser "
            "step) or raise the operator flag --prometheus-max-response-bytes"
        )

    def _interpret(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        secrets: list[str],
        attempt: int,
    ) -> dict[str, Any]:
        echo = self.config.echo_errors
        payload = _json_or_none(body)
        error_type, error_text = _prometheus_error(payload)
        if echo:
            detail = error_text or _body_text(body, secrets)
        else:
            # Only the client's own words: a status code, and Prometheus's errorType when it
            # is one of the documented few (so a fake one cannot carry text either).
            detail = ""
            if error_type not in PROMETHEUS_ERROR_TYPES:
                error_type = None
        kind_text = f" ({error_type})" if error_type else ""

        def fail(kind: ErrorKind, message: str) -> PrometheusError:
            return self._error(
                kind, message, secrets, attempt, status_code=status, error_type=error_type
            )

        def said(message: str) -> str:
            return f"{message}{kind_text}: {detail}" if detail else message + kind_text

        if status >= 500 or status == 429:
            what = "rate limited (429)" if status == 429 else f"answered {status}"
            raise _Retryable(fail(ErrorKind.SERVER_ERROR, said(what)), _retry_after(headers))
        if status in (400, 422):
            # Prometheus's own words (``1:5: parse error: ...``) are what the user needs; a
            # backend that may not be quoted gets a pointer to where they can be read.
            if echo:
                message = f"rejected the query{kind_text}: {detail or status}"
            else:
                message = (
                    f"rejected the query{kind_text} with status {status}; its error text is not "
                    "shown for a backend the operator does not run, run the query in that "
                    "backend's own UI to see it"
                )
            raise fail(ErrorKind.BAD_QUERY, message)
        if status in (401, 403, 407):
            raise fail(
                ErrorKind.UNAUTHORIZED, f"answered {status}{kind_text}: {detail or 'unauthorized'}"
            )
        if 300 <= status < 400:
            target = ""
            if echo:
                location = _strip_userinfo(headers.get("location", "?"))
                target = f" to {one_line(location, BODY_LIMIT)}"
            raise fail(
                ErrorKind.BAD_RESPONSE,
                f"answered {status} redirect{target}; check the URL and its path prefix",
            )
        if status != 200:
            hint = "; check the URL and its path prefix" if status == 404 else ""
            raise fail(ErrorKind.BAD_RESPONSE, said(f"answered {status}{hint}"))
        if payload is None:
            raise fail(ErrorKind.BAD_RESPONSE, said("answered 200 with no JSON"))
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise fail(ErrorKind.BAD_RESPONSE, said("answered 200 without success"))
        return payload

    def _auth(self, extra: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
        """Per-request auth headers, and every secret value that must never be shown."""
        cfg = self.config
        sent = [*cfg.headers.items(), *extra.items()]
        secrets = [v for k, v in sent if k.lower() in _SENSITIVE_HEADERS]
        userinfo = urllib.parse.urlsplit(cfg.url).password
        if userinfo:
            secrets.append(userinfo)
        headers: dict[str, str] = {}
        if cfg.bearer_token_file:
            token = _read_secret(cfg.bearer_token_file, "bearer token file")
            secrets.append(token)
            headers["Authorization"] = f"Bearer {token}"
        elif cfg.basic_auth_username is not None and cfg.basic_auth_password_file:
            password = _read_secret(cfg.basic_auth_password_file, "basic auth password file")
            encoded = base64.b64encode(f"{cfg.basic_auth_username}:{password}".encode()).decode()
            secrets += [password, encoded]
            headers["Authorization"] = f"Basic {encoded}"
        return headers, secrets

    def _error(
        self,
        kind: ErrorKind,
        message: str,
        secrets: list[str],
        attempt: int,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
    ) -> PrometheusError:
        text = redact(f"Prometheus at {self.config.safe_url} {message}", secrets)
        if attempt > 1:
            text += f" (after {attempt} attempts)"
        return PrometheusError(
            kind, text, status_code=status_code, error_type=error_type, attempts=attempt
        )

    def _observe(self, endpoint: str, outcome: str, seconds: float) -> None:
        if self.observer is None:
            return
        try:
            self.observer(endpoint, outcome, seconds)
        except Exception:
            # Metrics must never break a query.
            log.exception("Prometheus request observer failed")


async def _close_quietly(http: httpx.AsyncClient) -> None:
    try:
        await http.aclose()
    except Exception:
        # Closing sockets of a backend that is gone must not fail whoever let go of it.
        log.debug("closing Prometheus connections failed", exc_info=True)


class _Inflater:
    """Turns raw body chunks into content, never producing much more than the room left.

    httpx would inflate a whole network chunk at once: 64 KiB of gzip can hold 64 MiB of
    zeros. Inflating with a cap of one byte past the room is enough to see the bound crossed.
    """

    def __init__(self, encoding: str) -> None:
        coding = encoding.strip().lower()
        self._zlib: Any = None
        if coding in ("gzip", "x-gzip", "deflate"):
            # 32 + MAX_WBITS reads a gzip or a zlib header, whichever comes.
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)
        elif coding not in ("", "identity"):
            raise ValueError(coding)

    def __call__(self, raw: bytes, room: int) -> bytes:
        if self._zlib is None:
            return raw
        return bytes(self._zlib.decompress(raw, max(room, 0) + 1))


def _content_length(headers: httpx.Headers) -> int | None:
    try:
        value = int(headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _fmt_size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


class _Retryable(Exception):
    def __init__(self, error: PrometheusError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


def _backoff(cfg: PrometheusConfig, attempt: int, retry_after_s: float | None) -> float:
    # Full jitter (AWS architecture blog): many SLOs failing together must not retry in lockstep.
    delay = random.uniform(0, min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** (attempt - 1)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cfg.backoff_cap_s))
    return delay


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from Prometheus proxies, not worth parsing
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        # The path is configuration, not a secret; the content never appears.
        raise PrometheusError(
            ErrorKind.UNAUTHORIZED, f"cannot read {what} {path}: {exc.strerror or exc}"
        ) from None


@functools.cache
def _system_tls(trust_env: bool) -> ssl.SSLContext:
    # Loading the system CAs takes about 20 ms; shared, a client evicted and made again (the
    # pool) costs nothing. SSLContext is safe to share between connections.
    return httpx.create_ssl_context(trust_env=trust_env)


def _ca_context(path: str) -> ssl.SSLContext:
    # Only the given CA is trusted, like Prometheus's own tls_config.ca_file. Loaded when
    # connections open (not at construction), so a CA mounted late or rotated works, and a
    # missing one fails the query with a message instead of crashing whoever made the client.
    try:
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
        raise PrometheusError(
            ErrorKind.UNREACHABLE, f"cannot load ca_file {path}: {what or one_line(str(exc), 200)}"
        ) from None


def _tls_verification_error(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps ssl; a bound guards against cycles
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return one_line(seen.verify_message or str(seen), 200)
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException, echo: bool) -> str:
    """The most telling words about a transport failure ("Connection refused", not "failed").

    Without ``echo`` only the local system's words: a protocol error's text can quote what
    the server sent.
    """
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps anyio wraps the socket error
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno:
            if seen.errno > 0:
                return os.strerror(seen.errno)
            return str(seen.strerror or seen)
        seen = seen.__cause__ or seen.__context__
    text = one_line(str(exc), 200) if echo else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fmt_time(seconds: float) -> str:
    # Milliseconds are Prometheus's resolution; more digits only make the request longer.
    return f"{seconds:.3f}"


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _prometheus_error(payload: Any) -> tuple[str | None, str | None]:
    if isinstance(payload, dict) and payload.get("status") == "error":
        error_type = payload.get("errorType")
        error = payload.get("error")
        return (
            one_line(str(error_type), 40) if error_type is not None else None,
            one_line(str(error)) if error is not None else None,
        )
    return None, None


def _body_text(body: bytes, secrets: list[str]) -> str:
    text = body[: BODY_LIMIT * 4].decode("utf-8", errors="replace")
    return one_line(redact(text, secrets))


class _BadShape(Exception):
    """A 200 success whose body is not what the Prometheus API documents."""


def _parse(
    payload: dict[str, Any], expected: tuple[ResultType, ...], stats: bool, echo: bool
) -> QueryResult:
    try:
        return _parse_unchecked(payload, expected, stats, echo)
    except _BadShape:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # The exception's text quotes the body ("could not convert string to float: ...").
        detail = f": {one_line(str(exc), 120)}" if echo else ""
        raise _BadShape(f"answered an unexpected shape ({type(exc).__name__}{detail})") from None


_KNOWN_RESULT_TYPES = frozenset({"vector", "matrix", "scalar", "string"})


def _parse_unchecked(
    payload: dict[str, Any], expected: tuple[ResultType, ...], stats: bool, echo: bool
) -> QueryResult:
    data = payload["data"]
    raw_type = data["resultType"]
    if raw_type not in [t.value for t in expected]:
        shown = (
            repr(one_line(str(raw_type), 40))
            if echo or raw_type in _KNOWN_RESULT_TYPES
            else "of an unknown kind"
        )
        raise _BadShape(
            f"answered resultType {shown}, expected " + " or ".join(t.value for t in expected)
        )
    result_type = ResultType(raw_type)
    result = data["result"]
    samples: tuple[Sample, ...] = ()
    series: tuple[RangeSeries, ...] = ()
    if result_type is ResultType.SCALAR:
        samples = (Sample({}, float(result[1]), float(result[0])),)
    elif result_type is ResultType.VECTOR:
        samples = tuple(_sample(item) for item in result)
    else:
        series = tuple(_series(item) for item in result)
    warnings = tuple(one_line(str(w)) for w in payload.get("warnings") or ())
    total = peak = None
    if stats:
        counts = (data.get("stats") or {}).get("samples") or {}
        total = _opt_int(counts.get("totalQueryableSamples"))
        peak = _opt_int(counts.get("peakSamples"))
    return QueryResult(result_type, samples, series, warnings, total, peak)


def _labels(item: dict[str, Any]) -> dict[str, str]:
    metric = item.get("metric") or {}
    if not isinstance(metric, dict):
        raise TypeError("metric is not an object")
    return {str(k): str(v) for k, v in metric.items()}


def _sample(item: dict[str, Any]) -> Sample:
    if "value" not in item:
        raise ValueError("sample without a float value (native histograms are not supported)")
    timestamp, value = item["value"]
    # float() reads Prometheus's "NaN", "+Inf" and "-Inf" strings as the IEEE values.
    return Sample(_labels(item), float(value), float(timestamp))


def _series(item: dict[str, Any]) -> RangeSeries:
    if "values" not in item:
        raise ValueError("series without float values (native histograms are not supported)")
    points = item["values"]
    n = len(points)
    timestamps = np.fromiter((float(p[0]) for p in points), dtype=np.float64, count=n)
    values = np.fromiter((float(p[1]) for p in points), dtype=np.float64, count=n)
    return RangeSeries(_labels(item), timestamps, values)


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
