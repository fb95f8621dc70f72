"""Async Prometheus HTTP API client: instant and range queries, retries, a concurrency bound.

This is the only place the operator talks to Prometheus (or Thanos Query, Mimir, Cortex,
VictoriaMetrics: anything that speaks ``/api/v1/query`` and ``/api/v1/query_range``). It turns
every failure into a classified :class:`~slogate.prometheus.errors.PrometheusError` and never lets a
credential reach a message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import math
import os
import random
import ssl
import time
import urllib.parse
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
from slogate.prometheus.errors import BODY_LIMIT, ErrorKind, PrometheusError, one_line, redact

log = logging.getLogger(__name__)

Observer = Callable[[str, str, float], None]
"""``(endpoint, outcome, seconds)`` once per HTTP attempt; outcome is ``success`` or a kind."""

FloatArray = npt.NDArray[np.float64]

_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


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
        # A caller's dict must not change a frozen config behind its back.
        object.__setattr__(self, "headers", dict(self.headers))
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
            f"params={sorted(self.params)})"
        )


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

    def finite(self) -> RangeSeries:
        """The same series without NaN and ±Inf points."""
        keep = np.isfinite(self.values)
        return RangeSeries(self.labels, self.timestamps[keep], self.values[keep])


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
    """``async with PrometheusClient(config) as prom: await prom.instant("up")``."""

    def __init__(self, config: PrometheusConfig, observer: Observer | None = None) -> None:
        self.config = config
        self.observer = observer
        self.request_count = 0
        self._base = config.url.rstrip("/")
        self._semaphore = asyncio.Semaphore(config.max_concurrency)
        verify: ssl.SSLContext | bool = True
        if config.ca_file:
            # Only the given CA is trusted, like Prometheus's own tls_config.ca_file.
            verify = ssl.create_default_context(cafile=config.ca_file)
        elif config.insecure_skip_verify:
            verify = False
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(
                max_connections=config.max_concurrency,
                max_keepalive_connections=config.max_concurrency,
            ),
            verify=verify,
            trust_env=config.trust_env,
            follow_redirects=False,
            headers={"User-Agent": f"slogate/{__version__}", **config.headers},
        )

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def instant(
        self, query: str, at: float | None = None, *, stats: bool = False
    ) -> QueryResult:
        """Evaluate ``query`` at ``at`` (seconds since the epoch; default: server's now)."""
        form = {"query": query}
        if at is not None:
            form["time"] = _fmt_time(at)
        return await self._post(_ENDPOINT_QUERY, form, stats, _INSTANT_TYPES)

    async def range(
        self, query: str, start: float, end: float, step: float, *, stats: bool = False
    ) -> QueryResult:
        """Evaluate ``query`` at ``start, start + step, ... <= end``; returns matrix series."""
        if not step > 0 or not end >= start:
            raise ValueError(f"need step > 0 and end >= start, got {start=}, {end=}, {step=}")
        form = {
            "query": query,
            "start": _fmt_time(start),
            "end": _fmt_time(end),
            "step": _fmt_time(step),
        }
        return await self._post(_ENDPOINT_RANGE, form, stats, _RANGE_TYPES)

    async def _post(
        self,
        endpoint: str,
        form: dict[str, str],
        stats: bool,
        expected: tuple[ResultType, ...],
    ) -> QueryResult:
        cfg = self.config
        # Prometheus stops evaluating once the client has given up, instead of burning CPU.
        form = {**cfg.params, **form, "timeout": _fmt_time(cfg.timeout_s)}
        if stats:
            form["stats"] = "all"
        url = f"{self._base}/api/v1/{endpoint}"
        attempts = cfg.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(endpoint, url, form, attempt, expected)
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

    async def _attempt(
        self,
        endpoint: str,
        url: str,
        form: dict[str, str],
        attempt: int,
        expected: tuple[ResultType, ...],
    ) -> QueryResult:
        cfg = self.config
        # The semaphore is taken per attempt, so a query sleeping between retries does not
        # hold a slot other queries could use.
        async with self._semaphore:
            # Credentials are read before the clock starts; a missing file fails at once.
            headers, secrets = self._auth()
            self.request_count += 1
            started = time.monotonic()
            outcome = "success"
            try:
                try:
                    # httpx's timeout bounds each phase; this bounds the whole attempt, so a
                    # server that trickles bytes cannot hold a tick forever.
                    async with asyncio.timeout(cfg.timeout_s):
                        response = await self._http.post(url, data=form, headers=headers)
                        body = response.content
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
                            f"is unreachable: {_describe(exc)}",
                            secrets,
                            attempt,
                        )
                    ) from None
                payload = self._interpret(
                    response.status_code, response.headers, body, secrets, attempt
                )
                try:
                    return _parse(payload, expected, "stats" in form)
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

    def _interpret(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        secrets: list[str],
        attempt: int,
    ) -> dict[str, Any]:
        payload = _json_or_none(body)
        error_type, error_text = _prometheus_error(payload)
        detail = error_text or _body_text(body, secrets)

        def fail(kind: ErrorKind, message: str) -> PrometheusError:
            return self._error(
                kind, message, secrets, attempt, status_code=status, error_type=error_type
            )

        if status >= 500 or status == 429:
            what = "rate limited (429)" if status == 429 else f"answered {status}"
            raise _Retryable(
                fail(ErrorKind.SERVER_ERROR, f"{what}: {detail}" if detail else what),
                _retry_after(headers),
            )
        if status in (400, 422):
            # Prometheus's own words (``1:5: parse error: ...``) are what the user needs.
            kind_text = f" ({error_type})" if error_type else ""
            raise fail(ErrorKind.BAD_QUERY, f"rejected the query{kind_text}: {detail or status}")
        if status in (401, 403, 407):
            raise fail(ErrorKind.UNAUTHORIZED, f"answered {status}: {detail or 'unauthorized'}")
        if 300 <= status < 400:
            target = _strip_userinfo(headers.get("location", "?"))
            raise fail(
                ErrorKind.BAD_RESPONSE,
                f"answered {status} redirect to {target}; check the URL and its path prefix",
            )
        if status != 200:
            hint = "; check the URL and its path prefix" if status == 404 else ""
            raise fail(ErrorKind.BAD_RESPONSE, f"answered {status}{hint}: {detail}")
        if payload is None:
            raise fail(ErrorKind.BAD_RESPONSE, f"answered 200 with no JSON: {detail}")
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise fail(ErrorKind.BAD_RESPONSE, f"answered 200 without success: {detail}")
        return payload

    def _auth(self) -> tuple[dict[str, str], list[str]]:
        """Per-request auth headers, and every secret value that must never be shown."""
        cfg = self.config
        secrets = [v for k, v in cfg.headers.items() if k.lower() in _SENSITIVE_HEADERS]
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


def _tls_verification_error(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps ssl; a bound guards against cycles
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return one_line(seen.verify_message or str(seen), 200)
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    """The most telling words about a transport failure ("Connection refused", not "failed")."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps anyio wraps the socket error
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno:
            if seen.errno > 0:
                return os.strerror(seen.errno)
            return str(seen.strerror or seen)
        seen = seen.__cause__ or seen.__context__
    text = one_line(str(exc), 200)
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
            str(error_type) if error_type is not None else None,
            one_line(str(error)) if error is not None else None,
        )
    return None, None


def _body_text(body: bytes, secrets: list[str]) -> str:
    text = body[: BODY_LIMIT * 4].decode("utf-8", errors="replace")
    return one_line(redact(text, secrets))


class _BadShape(Exception):
    """A 200 success whose body is not what the Prometheus API documents."""


def _parse(payload: dict[str, Any], expected: tuple[ResultType, ...], stats: bool) -> QueryResult:
    try:
        return _parse_unchecked(payload, expected, stats)
    except _BadShape:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        detail = one_line(str(exc), 120)
        raise _BadShape(f"answered an unexpected shape ({type(exc).__name__}: {detail})") from None


def _parse_unchecked(
    payload: dict[str, Any], expected: tuple[ResultType, ...], stats: bool
) -> QueryResult:
    data = payload["data"]
    raw_type = data["resultType"]
    if raw_type not in [t.value for t in expected]:
        raise _BadShape(
            f"answered resultType {one_line(str(raw_type), 40)!r}, expected "
            + " or ".join(t.value for t in expected)
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
