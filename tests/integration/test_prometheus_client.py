"""The Prometheus client against a real Prometheus, with faults from a real proxy in front of it.

Nothing is mocked: numbers come from backfilled history, and every failure is one the fault
proxy produces on the wire (refused connections, resets, slow answers, 5xx, garbage, NaN), or
one a small real HTTP server in this file sends (endless and compressed bodies, which the proxy
would have to hold in memory).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import math
import pickle
import random
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from localenv.certs import CertificateAuthority
from localenv.faultproxy import FaultProxy
from localenv.processes import free_port
from localenv.prometheus import PrometheusServer, counter
from slogate.prometheus import (
    PROMETHEUS_ERROR_TYPES,
    ErrorKind,
    PrometheusClient,
    PrometheusConfig,
    PrometheusError,
    ResultType,
    is_finite,
)
from tests.integration.backends import Backend, MiB, endless, fixed

pytestmark = pytest.mark.prometheus

STEP = 60
POINTS = 180  # three hours of one-minute samples
JOB = "prom-client-test"
ERRORS = f'pc_requests_total{{job="{JOB}",code="500"}}'


@dataclass(frozen=True)
class History:
    start: float
    end: float
    ok: list[float]
    errors: list[float]

    def errors_at(self, i: int) -> float:
        """Counter value of the error series at sample ``i`` (sample 0 holds 0)."""
        return sum(self.errors[:i])


@pytest.fixture(scope="module")
def history(prometheus: PrometheusServer) -> History:
    rng = random.Random(4)
    end = (time.time() // STEP) * STEP - STEP
    start = end - POINTS * STEP
    ok = [float(rng.randint(10, 50)) for _ in range(POINTS)]
    errors = [float(rng.randint(0, 3)) for _ in range(POINTS)]
    prometheus.backfill(
        [
            counter("pc_requests_total", {"job": JOB, "code": "200"}, start, STEP, ok),
            counter("pc_requests_total", {"job": JOB, "code": "500"}, start, STEP, errors),
        ]
    )
    return History(start, end, ok, errors)


@pytest.fixture
def proxy(prometheus: PrometheusServer, history: History) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url) as p:
        yield p


def config(url: str, **overrides: object) -> PrometheusConfig:
    # Short timeouts and backoffs keep the fault tests fast; the logic is the same.
    fast: dict[str, object] = {"timeout_s": 5.0, "backoff_base_s": 0.01, "backoff_cap_s": 0.05}
    return PrometheusConfig(url, **{**fast, **overrides})  # type: ignore[arg-type]


async def fails(client: PrometheusClient, query: str = ERRORS) -> PrometheusError:
    with pytest.raises(PrometheusError) as caught:
        await client.instant(query)
    return caught.value


# -- answers from the real Prometheus -------------------------------------------------------


async def test_instant_query_returns_backfilled_numbers(
    prometheus: PrometheusServer, history: History
) -> None:
    async with PrometheusClient(config(prometheus.url)) as client:
        raw = await client.instant(ERRORS, at=history.end)
        increase = await client.instant(f"sum(increase({ERRORS}[1h]))", at=history.end)
        by_code = await client.instant(
            f'sum by (code) (pc_requests_total{{job="{JOB}"}})', at=history.end
        )
    assert raw.result_type is ResultType.VECTOR
    assert len(raw.samples) == 1
    sample = raw.samples[0]
    assert sample.labels == {"__name__": "pc_requests_total", "job": JOB, "code": "500"}
    assert sample.value == sum(history.errors)
    assert sample.timestamp == history.end
    assert increase.one() == pytest.approx(sum(history.errors[-60:]), rel=1e-9)
    assert {s.labels["code"]: s.value for s in by_code.samples} == {
        "200": sum(history.ok),
        "500": sum(history.errors),
    }


async def test_scalar_result_is_one_unlabelled_sample(prometheus: PrometheusServer) -> None:
    async with PrometheusClient(config(prometheus.url)) as client:
        result = await client.instant("1 + 1", at=1_700_000_000)
    assert result.result_type is ResultType.SCALAR
    assert result.one() == 2.0
    assert result.samples[0].labels == {}
    assert result.samples[0].timestamp == 1_700_000_000


async def test_range_query_returns_backfilled_series(
    prometheus: PrometheusServer, history: History
) -> None:
    async with PrometheusClient(config(prometheus.url)) as client:
        result = await client.range(ERRORS, history.start, history.end, STEP)
        coarse = await client.range(ERRORS, history.start, history.end, 30 * STEP)
    assert result.result_type is ResultType.MATRIX
    (series,) = result.series
    assert series.labels["code"] == "500"
    assert series.timestamps.dtype == np.float64 and series.values.dtype == np.float64
    expected_t = history.start + STEP * np.arange(POINTS + 1)
    np.testing.assert_array_equal(series.timestamps, expected_t)
    np.testing.assert_array_equal(series.values, np.cumsum([0.0, *history.errors]))
    (sparse,) = coarse.series
    assert len(sparse.timestamps) == POINTS // 30 + 1
    assert sparse.values[-1] == history.errors_at(POINTS)


async def test_stats_report_queryable_samples(
    proxy: FaultProxy, prometheus: PrometheusServer, history: History
) -> None:
    async with PrometheusClient(config(proxy.url)) as client:
        plain = await client.instant(ERRORS, at=history.end)
        assert "stats" not in proxy.last_request().form()
        instant = await client.instant(f"increase({ERRORS}[1h])", at=history.end, stats=True)
        assert proxy.last_request().form()["stats"] == "all"
        ranged = await client.range(ERRORS, history.start, history.end, STEP, stats=True)
    assert plain.total_queryable_samples is None
    # increase over 1h at one-minute resolution touches the 61 samples in the window.
    assert instant.total_queryable_samples == 61
    assert ranged.total_queryable_samples is not None and ranged.total_queryable_samples > 0


async def test_queries_are_posted_so_long_queries_work(proxy: FaultProxy, history: History) -> None:
    # A label that no series has matches every series under !~; the alternatives only make the
    # query long (well past the 8 KiB that many proxies allow for a URL).
    alternatives = "|".join(f"/not/a/path/{i:05d}" for i in range(2000))
    query = f'sum(pc_requests_total{{job="{JOB}",code="500",path!~"{alternatives}"}})'
    assert len(query) > 8192 * 4
    async with PrometheusClient(config(proxy.url)) as client:
        result = await client.instant(query, at=history.end)
    assert result.one() == sum(history.errors)
    seen = proxy.last_request()
    assert seen.method == "POST"
    assert seen.path == "/api/v1/query"
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.form()["query"] == query
    assert seen.form()["time"] == f"{history.end:.3f}"


async def test_url_path_prefix(prometheus: PrometheusServer, history: History) -> None:
    with FaultProxy(prometheus.url, prefix="/prom") as prefixed:
        assert prefixed.url.endswith("/prom")
        for url in (prefixed.url, prefixed.url + "/"):
            async with PrometheusClient(config(url)) as client:
                result = await client.instant(ERRORS, at=history.end)
            assert result.one() == sum(history.errors)
            assert prefixed.last_request().path == "/prom/api/v1/query"
        # Without the prefix the proxy answers 404, like a reverse proxy would: a config
        # mistake to report at once, not to retry.
        prefixed.clear()
        base = prefixed.url.removesuffix("/prom")
        async with PrometheusClient(config(base)) as client:
            err = await fails(client)
    assert err.kind is ErrorKind.BAD_RESPONSE
    assert "404" in str(err) and "prefix" in str(err)
    assert prefixed.requests == 1


# -- query errors from Prometheus itself ----------------------------------------------------


async def test_syntax_error_is_bad_query_with_prometheus_text_and_no_retry(
    proxy: FaultProxy,
) -> None:
    async with PrometheusClient(config(proxy.url)) as client:
        err = await fails(client, "sum(rate(pc_requests_total[5m])")
    assert err.kind is ErrorKind.BAD_QUERY
    assert err.reason == "QueryRejected"
    assert err.status_code == 400
    assert err.error_type == "bad_data"
    assert "parse error" in str(err)
    assert "unclosed left parenthesis" in str(err)
    assert proxy.requests == 1


async def test_execution_error_422_is_bad_query(proxy: FaultProxy, history: History) -> None:
    # Both sides hold the 200 and 500 series of one job: many-to-many, which Prometheus
    # refuses while evaluating (422), not while parsing.
    query = f'pc_requests_total{{job="{JOB}"}} + on(job) pc_requests_total{{job="{JOB}"}}'
    async with PrometheusClient(config(proxy.url)) as client:
        with pytest.raises(PrometheusError) as caught:
            await client.instant(query, at=history.end)
    err = caught.value
    assert err.kind is ErrorKind.BAD_QUERY
    assert err.status_code == 422
    assert err.error_type == "execution"
    assert "many-to-many" in str(err)
    assert proxy.requests == 1


async def test_range_vector_from_an_instant_query_is_a_bad_response(
    prometheus: PrometheusServer, history: History
) -> None:
    async with PrometheusClient(config(prometheus.url)) as client:
        with pytest.raises(PrometheusError) as caught:
            await client.instant(f"{ERRORS}[5m]", at=history.end)
    assert caught.value.kind is ErrorKind.BAD_RESPONSE
    assert "matrix" in str(caught.value)


# -- retries --------------------------------------------------------------------------------


async def test_503_is_retried_until_the_proxy_passes_again(proxy: FaultProxy) -> None:
    events: list[tuple[str, str, float]] = []
    proxy.respond(503)
    cfg = config(proxy.url, retries=10, backoff_base_s=0.05, backoff_cap_s=0.05)
    async with PrometheusClient(cfg, observer=lambda *e: events.append(e)) as client:
        query = asyncio.create_task(client.instant(ERRORS))
        assert await asyncio.to_thread(proxy.wait_for_requests, 3, 5.0)
        proxy.pass_through()
        result = await query
    assert len(result.samples) == 1
    assert client.request_count == proxy.requests >= 4
    outcomes = [outcome for _, outcome, _ in events]
    assert outcomes == ["server_error"] * (len(outcomes) - 1) + ["success"]
    assert {endpoint for endpoint, _, _ in events} == {"query"}
    assert all(seconds >= 0 for _, _, seconds in events)


async def test_transient_503_then_success_counts_attempts(proxy: FaultProxy) -> None:
    proxy.respond(503, times=2)
    async with PrometheusClient(config(proxy.url, retries=3)) as client:
        await client.range(ERRORS, time.time() - 600, time.time(), STEP)
    assert proxy.requests == client.request_count == 3


async def test_5xx_after_all_retries_is_server_error(proxy: FaultProxy) -> None:
    proxy.respond(500, '{"status":"error","errorType":"internal","error":"disk on fire"}')
    async with PrometheusClient(config(proxy.url, retries=2)) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.SERVER_ERROR
    assert err.reason == "PrometheusServerError"
    assert err.attempts == 3 and proxy.requests == 3
    assert "500" in str(err) and "disk on fire" in str(err) and "3 attempts" in str(err)


async def test_429_is_retried(proxy: FaultProxy) -> None:
    proxy.respond(429, "slow down", headers={"Retry-After": "0"}, times=1)
    async with PrometheusClient(config(proxy.url, retries=1)) as client:
        await client.instant(ERRORS)
    assert proxy.requests == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_unauthorized_is_not_retried(proxy: FaultProxy, status: int) -> None:
    proxy.respond(status)
    async with PrometheusClient(config(proxy.url, retries=3)) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.UNAUTHORIZED
    assert err.reason == "PrometheusUnauthorized"
    assert err.status_code == status
    assert proxy.requests == 1


# -- transport faults -----------------------------------------------------------------------


async def test_slow_answer_is_a_timeout(proxy: FaultProxy) -> None:
    proxy.slow(3.0)
    started = time.monotonic()
    async with PrometheusClient(config(proxy.url, timeout_s=0.3, retries=1)) as client:
        err = await fails(client)
    assert time.monotonic() - started < 1.5
    assert err.kind is ErrorKind.TIMEOUT
    assert err.reason == "PrometheusTimeout"
    assert "0.3s" in str(err)
    assert err.attempts == 2 and proxy.requests == 2
    # Prometheus is told the same deadline, so it can stop evaluating too.
    assert proxy.last_request().form()["timeout"] == "0.300"


async def test_down_is_unreachable_and_recovers_on_the_same_port(proxy: FaultProxy) -> None:
    async with PrometheusClient(config(proxy.url, retries=2)) as client:
        await client.instant(ERRORS)  # leaves a pooled keep-alive connection behind
        proxy.down()
        err = await fails(client)
        assert err.kind is ErrorKind.UNREACHABLE
        assert err.reason == "PrometheusUnreachable"
        assert err.attempts == 3
        assert client.request_count == 4
        proxy.pass_through()
        assert len((await client.instant(ERRORS)).samples) == 1


async def test_connection_reset_is_unreachable(proxy: FaultProxy) -> None:
    proxy.reset_connections()
    async with PrometheusClient(config(proxy.url, retries=1)) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.UNREACHABLE
    assert proxy.requests == 2


async def test_nothing_listening_is_unreachable() -> None:
    async with PrometheusClient(config(f"http://127.0.0.1:{free_port()}", retries=0)) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.UNREACHABLE
    assert "refused" in str(err).lower()


async def test_garbage_is_bad_response_without_retry(proxy: FaultProxy) -> None:
    proxy.garbage()
    async with PrometheusClient(config(proxy.url)) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.BAD_RESPONSE
    assert err.reason == "BadPrometheusResponse"
    assert "no JSON" in str(err)
    assert proxy.requests == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"status":"success","data":{"resultType":"string","result":[1,"x"]}}', "string"),
        ('{"status":"success","data":{}}', "unexpected shape"),
        ('{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}', "shape"),
        ('{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"x"]}]}}', ""),
        ('["not", "an", "object"]', "without success"),
        ("<html>" + "x" * 5000 + "</html>", "<html>"),
    ],
)
async def test_wrong_shapes_are_bad_responses(proxy: FaultProxy, body: str, expected: str) -> None:
    proxy.respond(200, body, content_type="application/json")
    async with PrometheusClient(config(proxy.url)) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.BAD_RESPONSE
    assert expected in str(err)
    assert len(str(err)) < 500
    assert "\n" not in str(err)


@pytest.mark.parametrize(("value", "expected"), [("NaN", math.nan), ("+Inf", math.inf)])
async def test_nan_and_inf_values_parse(
    proxy: FaultProxy, history: History, value: str, expected: float
) -> None:
    proxy.nan(value)
    async with PrometheusClient(config(proxy.url)) as client:
        instant = await client.instant(ERRORS, at=history.end)
        ranged = await client.range(ERRORS, history.start, history.end, STEP)
        proxy.nan("-Inf")
        negative = await client.instant(ERRORS, at=history.end)
    got = instant.one()
    assert got is not None and not is_finite(got)
    assert math.isnan(got) if math.isnan(expected) else got == expected
    (series,) = ranged.series
    assert len(series.values) == POINTS + 1
    assert not np.isfinite(series.values).any()
    assert negative.one() == -math.inf
    assert is_finite(1.0) and not is_finite(None)


async def test_empty_result(proxy: FaultProxy, history: History) -> None:
    proxy.empty()
    async with PrometheusClient(config(proxy.url)) as client:
        instant = await client.instant(ERRORS, at=history.end)
        ranged = await client.range(ERRORS, history.start, history.end, STEP)
    assert instant.samples == () and instant.one() is None
    assert ranged.result_type is ResultType.MATRIX and ranged.series == ()


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("bound", [2, 6])
async def test_concurrency_bound_holds(proxy: FaultProxy, bound: int) -> None:
    proxy.slow(0.25)
    started = time.monotonic()
    async with PrometheusClient(config(proxy.url, max_concurrency=bound)) as client:
        results = await asyncio.gather(*(client.instant(ERRORS) for _ in range(6)))
    elapsed = time.monotonic() - started
    assert all(len(r.samples) == 1 for r in results)
    # The proxy saw the bound reached and never exceeded.
    assert proxy.max_in_flight == bound
    assert elapsed >= 0.25 * math.ceil(6 / bound) - 0.05


# -- credentials and headers ----------------------------------------------------------------


async def test_bearer_token_file_is_sent_reread_and_never_shown(
    proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    first, second = "s3cr3t-token-first-0123456789", "s3cr3t-token-second-9876543210"
    token_file.write_text(first + "\n")
    cfg = config(proxy.url, bearer_token_file=str(token_file), retries=1)
    async with PrometheusClient(cfg) as client:
        await client.instant(ERRORS)
        assert proxy.last_request().headers["authorization"] == f"Bearer {first}"
        token_file.write_text(second)  # rotated, as kubelet does for projected tokens
        await client.instant(ERRORS)
        assert proxy.last_request().headers["authorization"] == f"Bearer {second}"

        errors = []
        faults: list[Callable[[], None]] = [
            lambda: proxy.respond(401, f"token {second} rejected"),
            lambda: proxy.respond(503, f'{{"status":"error","error":"bad {second}"}}'),
            lambda: proxy.respond(200, f"not json {second}"),
            lambda: proxy.respond(400, f'{{"status":"error","error":"{second}"}}'),
            proxy.down,
        ]
        for fault in faults:
            fault()
            errors.append(await fails(client))
        proxy.pass_through()
    assert [e.kind for e in errors] == [
        ErrorKind.UNAUTHORIZED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.BAD_RESPONSE,
        ErrorKind.BAD_QUERY,
        ErrorKind.UNREACHABLE,
    ]
    for err in errors:
        for shown in (str(err), repr(err), err.message, str(err.args)):
            assert first not in shown and second not in shown and "s3cr3t" not in shown
    assert "<redacted>" in str(errors[0])
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(cfg)


async def test_basic_auth_password_file(proxy: FaultProxy, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("hunter2-but-longer\n")
    cfg = config(
        proxy.url, basic_auth_username="slogate", basic_auth_password_file=str(password_file)
    )
    encoded = base64.b64encode(b"slogate:hunter2-but-longer").decode()
    async with PrometheusClient(cfg) as client:
        await client.instant(ERRORS)
        assert proxy.last_request().headers["authorization"] == f"Basic {encoded}"
        proxy.respond(403, f"denied for {encoded} (hunter2-but-longer)")
        err = await fails(client)
    assert err.kind is ErrorKind.UNAUTHORIZED
    assert "hunter2" not in str(err) and encoded not in str(err)


async def test_missing_token_file_fails_before_any_request(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    cfg = config(proxy.url, bearer_token_file=str(tmp_path / "absent"))
    async with PrometheusClient(cfg) as client:
        err = await fails(client)
    assert err.kind is ErrorKind.UNAUTHORIZED
    assert "bearer token file" in str(err) and "absent" in str(err)
    assert proxy.requests == 0 and client.request_count == 0


async def test_extra_headers_and_params_are_sent(proxy: FaultProxy) -> None:
    cfg = config(
        proxy.url,
        headers={"X-Scope-OrgID": "tenant-a|tenant-b"},
        params={"partial_response": "false"},
    )
    async with PrometheusClient(cfg) as client:
        await client.instant(ERRORS)
        await client.range(ERRORS, time.time() - 600, time.time(), STEP)
    for seen in proxy.recorded():
        assert seen.headers["x-scope-orgid"] == "tenant-a|tenant-b"
        assert seen.headers["user-agent"].startswith("slogate/")
        assert seen.form()["partial_response"] == "false"
    assert [r.path for r in proxy.recorded()] == ["/api/v1/query", "/api/v1/query_range"]


async def test_custom_ca_and_insecure_skip_verify(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    ca = CertificateAuthority("prom-client-test-ca")
    ca.serving("prometheus").write(tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    with FaultProxy(prometheus.url, tls=(tmp_path / "tls.crt", tmp_path / "tls.key")) as tls:
        assert tls.url.startswith("https://")
        for cfg in (
            config(tls.url, ca_file=str(tmp_path / "ca.crt")),
            config(tls.url, insecure_skip_verify=True),
        ):
            async with PrometheusClient(cfg) as client:
                assert len((await client.instant(ERRORS)).samples) == 1
        tls.clear()
        async with PrometheusClient(config(tls.url, trust_env=False)) as client:
            err = await fails(client)
    assert err.kind is ErrorKind.UNREACHABLE
    assert "certificate" in str(err)
    assert err.attempts == 1  # a wrong CA is not retried


# -- the client's own contract --------------------------------------------------------------


async def test_observer_failure_does_not_break_queries(proxy: FaultProxy) -> None:
    def broken(endpoint: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("metrics backend gone")

    async with PrometheusClient(config(proxy.url), observer=broken) as client:
        assert len((await client.instant(ERRORS)).samples) == 1
        assert client.request_count == 1


def test_config_validation_and_hashing() -> None:
    for bad in (
        {"url": "prometheus:9090"},
        {"url": "http://p:9090?x=1"},
        {"url": "http://p", "timeout_s": 0},
        {"url": "http://p", "retries": -1},
        {"url": "http://p", "max_concurrency": 0},
        {"url": "http://p", "basic_auth_username": "u"},
        {"url": "http://p", "bearer_token_file": "/t", "basic_auth_username": "u",
         "basic_auth_password_file": "/p"},
        {"url": "http://p", "ca_file": "/ca", "insecure_skip_verify": True},
        {"url": "http://p", "params": {"query": "up"}},
        {"url": "http://p", "max_response_bytes": 0},
        {"url": "http://p", "headers": {"X-Scope-OrgID": "a\r\nInjected: 1"}},
        {"url": "http://p", "headers": {"Bad Name": "x"}},
    ):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011 - the messages differ per field
            PrometheusConfig(**bad)
    a = PrometheusConfig("http://p:9090", headers={"X-Scope-OrgID": "t"})
    b = PrometheusConfig("http://p:9090", headers={"X-Scope-OrgID": "t"})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    leaky = PrometheusConfig("http://user:pw-secret@p:9090", headers={"Authorization": "Bearer x1"})
    assert "pw-secret" not in repr(leaky) and "x1" not in repr(leaky)
    assert leaky.safe_url == "http://p:9090"


def test_error_kinds_reasons_and_pickling() -> None:
    assert {k.value: k.reason for k in ErrorKind} == {
        "unreachable": "PrometheusUnreachable",
        "timeout": "PrometheusTimeout",
        "bad_query": "QueryRejected",
        "unauthorized": "PrometheusUnauthorized",
        "server_error": "PrometheusServerError",
        "bad_response": "BadPrometheusResponse",
        "response_too_large": "PrometheusResponseTooLarge",
    }
    err = PrometheusError(ErrorKind.BAD_QUERY, "x\n" * 2000, status_code=400, error_type="bad_data")
    assert "\n" not in str(err) and len(str(err)) <= 1000
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.kind, copy.message, copy.status_code, copy.error_type) == (
        err.kind,
        err.message,
        400,
        "bad_data",
    )


# -- bounded answers ------------------------------------------------------------------------


def reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM, so the peak below is this test's alone.
    Path("/proc/self/clear_refs").write_text("5")


def rss_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, field
    return int(match[1])


async def test_huge_answer_is_cut_off_at_the_bound_without_being_held() -> None:
    with Backend(endless(200 * MiB)) as backend:
        reset_peak_rss()
        before = rss_kib("VmRSS")
        started = time.monotonic()
        async with PrometheusClient(config(backend.url, retries=2)) as client:
            err = await fails(client)
        elapsed = time.monotonic() - started
        grown_mib = (rss_kib("VmHWM") - before) / 1024
    assert err.kind is ErrorKind.RESPONSE_TOO_LARGE
    assert err.reason == "PrometheusResponseTooLarge"
    assert err.attempts == 1 and backend.requests == 1  # asked once, though retries=2
    assert err.status_code == 200
    assert "8 MiB" in str(err) and "--prometheus-max-response-bytes" in str(err)
    assert "aggregate" in str(err)
    assert elapsed < 5.0
    # The server got rid of the bound plus what the kernel buffers on loopback, not 200 MB.
    assert backend.sent < 8 * MiB + 40 * MiB
    assert grown_mib < 48, f"peak RSS grew {grown_mib:.0f} MiB"


async def test_announced_length_over_the_bound_is_refused_before_reading() -> None:
    # The server announces 200 MB and then sends nothing until the test ends: only a client
    # that believes the announcement fails fast.
    with Backend(endless(200 * MiB, announce=True, hold=True)) as backend:
        started = time.monotonic()
        async with PrometheusClient(config(backend.url, max_response_bytes=MiB)) as client:
            err = await fails(client)
        elapsed = time.monotonic() - started
        assert backend.sent == 0
    assert err.kind is ErrorKind.RESPONSE_TOO_LARGE
    assert "1 MiB" in str(err)
    assert elapsed < 1.0


def gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    return b"".join([*(packer.compress(zeros) for _ in range(size // MiB)), packer.flush()])


async def test_compressed_answers_are_inflated_under_the_bound() -> None:
    bomb = gzip_of_zeros(200 * MiB)
    assert len(bomb) < MiB  # far below the bound on the wire
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [1.5, "42"]}}
    small = gzip.compress(json.dumps(answer).encode())
    with Backend(fixed(bomb, headers={"Content-Encoding": "gzip"})) as backend:
        reset_peak_rss()
        before = rss_kib("VmRSS")
        async with PrometheusClient(config(backend.url)) as client:
            err = await fails(client)
        grown_mib = (rss_kib("VmHWM") - before) / 1024
    assert err.kind is ErrorKind.RESPONSE_TOO_LARGE
    assert grown_mib < 48, f"peak RSS grew {grown_mib:.0f} MiB"
    with Backend(fixed(small, headers={"Content-Encoding": "gzip"})) as backend:
        async with PrometheusClient(config(backend.url)) as client:
            assert (await client.instant("vector(42)")).one() == 42.0
    with Backend(fixed(small, headers={"Content-Encoding": "br"})) as backend:
        async with PrometheusClient(config(backend.url)) as client:
            err = await fails(client)
    assert err.kind is ErrorKind.BAD_RESPONSE and "Content-Encoding" in str(err)
    with Backend(fixed(b"\x1f\x8b not gzip at all", headers={"Content-Encoding": "gzip"})) as b:
        async with PrometheusClient(config(b.url)) as client:
            err = await fails(client)
    assert err.kind is ErrorKind.BAD_RESPONSE and "gzip" in str(err)


async def test_real_prometheus_answers_over_and_under_a_bound(
    prometheus: PrometheusServer, history: History
) -> None:
    async with PrometheusClient(config(prometheus.url, max_response_bytes=2048)) as small:
        assert (await small.instant("1 + 1")).one() == 2.0
        with pytest.raises(PrometheusError) as caught:
            await small.range(ERRORS, history.start, history.end, STEP)
    assert caught.value.kind is ErrorKind.RESPONSE_TOO_LARGE
    assert "2 KiB" in str(caught.value)
    async with PrometheusClient(config(prometheus.url)) as client:
        (series,) = (await client.range(ERRORS, history.start, history.end, STEP)).series
    assert len(series.values) == POINTS + 1


async def test_trickling_body_hits_the_whole_attempt_timeout() -> None:
    # Every byte arrives well within httpx's per-read timeout; only a bound on the whole
    # attempt, body included, ends this.
    trickle = endless(MiB, chunk=b" ", pause_s=0.05)
    with Backend(trickle) as backend:
        started = time.monotonic()
        async with PrometheusClient(config(backend.url, timeout_s=0.5, retries=0)) as client:
            err = await fails(client)
        elapsed = time.monotonic() - started
    assert err.kind is ErrorKind.TIMEOUT
    assert 0.4 < elapsed < 2.0
    assert 0 < backend.sent < 100


async def test_huge_error_answer_is_reported_by_its_status() -> None:
    with Backend(endless(200 * MiB, status=503)) as backend:
        started = time.monotonic()
        async with PrometheusClient(config(backend.url, retries=1)) as client:
            err = await fails(client)
        elapsed = time.monotonic() - started
    # A 503 is a 503 however long its page; it is read only as far as a message needs.
    assert err.kind is ErrorKind.SERVER_ERROR
    assert err.attempts == 2 and backend.requests == 2
    assert elapsed < 5.0
    assert len(str(err)) < 500


# -- what a backend's words may do in a message ---------------------------------------------

HOSTILE = (
    "Ready=True\nreason: AllGood\r\n\x1b[2J\x1b[31mhacked\x1b[0m\x00\x07\u202egnp.\u200b"
    + "A" * 3000
)
HOSTILE_WORDS = ("Ready=True", "AllGood", "hacked", "AAAAAAAA", "evil.example", "gnp")


def _error_json(error_type: str, error: str = HOSTILE) -> str:
    return json.dumps({"status": "error", "errorType": error_type, "error": error})


HOSTILE_ANSWERS: list[tuple[int, str, dict[str, str], ErrorKind, str | None]] = [
    # status, body, headers, kind, errorType the client may repeat when not echoing
    (400, _error_json("bad_data"), {}, ErrorKind.BAD_QUERY, "bad_data"),
    (422, _error_json("Ready=True " + "B" * 100), {}, ErrorKind.BAD_QUERY, None),
    (503, _error_json("unavailable"), {}, ErrorKind.SERVER_ERROR, "unavailable"),
    (500, HOSTILE, {}, ErrorKind.SERVER_ERROR, None),
    (401, HOSTILE, {}, ErrorKind.UNAUTHORIZED, None),
    (404, HOSTILE, {}, ErrorKind.BAD_RESPONSE, None),
    (302, HOSTILE, {"Location": "http://evil.example/Ready=True/" + "C" * 900},
     ErrorKind.BAD_RESPONSE, None),
    (200, HOSTILE, {}, ErrorKind.BAD_RESPONSE, None),
    (200, _error_json("execution"), {}, ErrorKind.BAD_RESPONSE, "execution"),
    (200, json.dumps({"status": "success", "data": {"resultType": "vector",
     "result": [{"metric": {}, "value": [1, HOSTILE]}]}}), {}, ErrorKind.BAD_RESPONSE, None),
    (200, json.dumps({"status": "success", "data": {"resultType": HOSTILE, "result": []}}), {},
     ErrorKind.BAD_RESPONSE, None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "headers", "kind", "error_type"), HOSTILE_ANSWERS)
async def test_untrusted_backend_words_are_never_echoed(
    proxy: FaultProxy,
    status: int,
    body: str,
    headers: dict[str, str],
    kind: ErrorKind,
    error_type: str | None,
) -> None:
    proxy.respond(status, body, headers=headers, content_type="application/json")
    async with PrometheusClient(config(proxy.url, echo_errors=False, retries=0)) as client:
        err = await fails(client)
    text = str(err)
    assert err.kind is kind
    assert err.status_code == status
    assert err.error_type == error_type
    assert text.startswith(f"Prometheus at {proxy.url} ")
    assert str(status) in text or (status == 200 and "answered" in text)
    shown_types = [t for t in PROMETHEUS_ERROR_TYPES if f"({t})" in text]
    assert shown_types == ([error_type] if error_type else [])
    assert [w for w in HOSTILE_WORDS if w in text] == []
    assert text.isprintable() and len(text) < 300


@pytest.mark.parametrize(("status", "body", "headers", "kind", "error_type"), HOSTILE_ANSWERS)
async def test_trusted_backend_words_are_one_printable_line(
    proxy: FaultProxy,
    status: int,
    body: str,
    headers: dict[str, str],
    kind: ErrorKind,
    error_type: str | None,
) -> None:
    proxy.respond(status, body, headers=headers, content_type="application/json")
    async with PrometheusClient(config(proxy.url, retries=0)) as client:
        err = await fails(client)
    text = str(err)
    assert err.kind is kind
    assert text.isprintable()
    # Whole escape sequences go, not just the ESC (a repr'd "\\x1b[2J" is plain text).
    assert "[2J" not in text.replace("\\x1b[2J", "")
    # What the backend said is kept (so the admin sees it), but at most 300 characters of it.
    assert "Ready=True" in text or "evil.example" in text or "shape" in text
    assert len(text) <= len(f"Prometheus at {proxy.url} rejected the query (): ") + 40 + 300
    if err.error_type is not None:
        assert err.error_type.isprintable() and len(err.error_type) <= 40


# -- per-request headers --------------------------------------------------------------------


async def test_per_request_headers_merge_over_the_config_for_that_request_only(
    proxy: FaultProxy, history: History, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token-from-file")
    cfg = config(
        proxy.url,
        headers={"X-Scope-OrgID": "operator-default", "X-Kept": "kept"},
        bearer_token_file=str(token_file),
    )
    async with PrometheusClient(cfg) as client:
        await client.instant(ERRORS, at=history.end, headers={"X-Scope-OrgID": "shop"})
        shop = proxy.last_request().headers
        await client.range(
            ERRORS, history.start, history.end, STEP, headers={"x-scope-orgid": "payments"}
        )
        payments = proxy.last_request()
        await client.instant(ERRORS, at=history.end)
        plain = proxy.last_request().headers
        # Concurrent queries for different tenants each carry their own header.
        proxy.clear()
        tenants = [f"team-{i}" for i in range(8)]
        await asyncio.gather(
            *(
                client.instant(ERRORS, at=history.end - i, headers={"X-Scope-OrgID": t})
                for i, t in enumerate(tenants)
            )
        )
        seen = {r.form()["time"]: r.headers["x-scope-orgid"] for r in proxy.recorded()}
        # Credentials from the config's files win over a per-request Authorization, and a
        # per-request secret is redacted like a configured one.
        proxy.respond(401, "denied per-request-secret-value", times=1)
        with pytest.raises(PrometheusError) as caught:
            await client.instant(ERRORS, headers={"Authorization": "per-request-secret-value"})
        denied = proxy.last_request().headers
    assert shop["x-scope-orgid"] == "shop" and shop["x-kept"] == "kept"
    assert shop["authorization"] == "Bearer s3cr3t-token-from-file"
    assert payments.path == "/api/v1/query_range"
    assert payments.headers["x-scope-orgid"] == "payments"
    assert plain["x-scope-orgid"] == "operator-default"
    assert seen == {f"{history.end - i:.3f}": t for i, t in enumerate(tenants)}
    assert denied["authorization"] == "Bearer s3cr3t-token-from-file"
    assert "per-request-secret-value" not in str(caught.value)
    assert "<redacted>" in str(caught.value)


async def test_per_request_headers_are_checked_before_sending(proxy: FaultProxy) -> None:
    async with PrometheusClient(config(proxy.url)) as client:
        for bad in ({"X-Scope-OrgID": "shop\r\nAuthorization: x"}, {"X Scope": "shop"}):
            with pytest.raises(ValueError, match="header"):
                await client.instant(ERRORS, headers=bad)
    assert proxy.requests == 0


# -- lifecycle ------------------------------------------------------------------------------


async def test_missing_ca_file_fails_the_query_with_a_message(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    client = PrometheusClient(config(proxy.url, ca_file=str(tmp_path / "absent.crt")))
    async with client:
        err = await fails(client)
    assert err.kind is ErrorKind.UNREACHABLE
    assert "ca_file" in str(err) and "absent.crt" in str(err)
    assert proxy.requests == 0


async def test_retired_client_finishes_lets_go_and_still_answers(proxy: FaultProxy) -> None:
    proxy.slow(0.5, times=1)
    client = PrometheusClient(config(proxy.url))
    try:
        assert not client.connected  # nothing is opened before the first query
        running = asyncio.create_task(client.instant("vector(1)"))
        assert await asyncio.to_thread(proxy.wait_for_requests, 1, 5.0)
        assert client.retire() is None  # busy: the running query closes it as it ends
        assert client.connected and client.in_flight == 1
        assert (await running).one() == 1.0
        assert not client.connected and client.in_flight == 0
        # A caller still holding the client is served, and the client lets go again.
        assert (await client.instant("vector(2)")).one() == 2.0
        assert not client.connected
    finally:
        await client.aclose()
    with pytest.raises(RuntimeError):
        await client.instant("vector(3)")
