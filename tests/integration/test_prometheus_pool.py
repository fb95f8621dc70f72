"""The client pool: which URL gets which client (and credentials), and bounded resources.

Allow-list decisions are checked without a network; everything about credentials, eviction and
sockets runs against real servers: the real Prometheus behind real fault proxies, and a small
aiohttp server that answers like Prometheus under any path prefix (for a thousand distinct
URLs, which the fault proxy's single prefix cannot serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from localenv.faultproxy import FaultProxy
from localenv.prometheus import PrometheusServer
from slogate.prometheus import (
    ClientPool,
    ErrorKind,
    PrometheusClient,
    PrometheusConfig,
    PrometheusError,
    UrlInvalid,
    UrlNotAllowed,
)

pytestmark = pytest.mark.prometheus

BASE = "http://prometheus.monitoring:9090"
ALLOWED = (
    "http://prom",
    "http://thanos.monitoring:9090/tenants/",
    "https://mimir.example/prometheus",
    "http://[::1]:9090/",
)


def pool_for(base: str = BASE, allowed: tuple[str, ...] = ALLOWED, **kwargs: object) -> ClientPool:
    return ClientPool(PrometheusConfig(base), allowed_urls=allowed, **kwargs)  # type: ignore[arg-type]


# -- which URL is allowed -------------------------------------------------------------------


def test_no_url_and_the_base_url_get_the_default_client() -> None:
    pool = pool_for("http://Prometheus.Monitoring:9090/prefix/")
    default = pool.get(None)
    for same in (
        "http://prometheus.monitoring:9090/prefix",
        "HTTP://PROMETHEUS.monitoring:9090/prefix//",
    ):
        assert pool.get(same) is default
    assert default.config.url == "http://Prometheus.Monitoring:9090/prefix/"
    assert len(pool) == 0
    secured = pool_for("https://prom.example")
    assert secured.get("https://prom.example:443/") is secured.get(None)
    with_userinfo = pool_for("http://operator:pw@prom.example:9090")
    assert with_userinfo.get("http://prom.example:9090") is with_userinfo.get(None)


@pytest.mark.parametrize(
    "url",
    [
        "http://prom",
        "http://prom/",
        "http://PROM:80",
        "http://thanos.monitoring:9090/tenants",
        "http://thanos.monitoring:9090/tenants/shop",
        "http://thanos.monitoring:9090/tenants/shop/eu/",
        "https://mimir.example:443/prometheus/",
        "http://[::1]:9090/anything/below",
    ],
)
def test_allowed_urls(url: str) -> None:
    pool = pool_for()
    assert pool.get(url) is not pool.get(None)
    assert len(pool) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://prometheus.evil",  # a longer host is not "under" an entry
        "http://prom.evil",
        "http://evilprom",
        "http://prom:9090",  # another port
        "https://prom",  # another scheme
        "http://prom/other",  # "http://prom" is an exact entry, not a prefix
        "http://thanos.monitoring:9090/tenantsX",
        "http://thanos.monitoring:9090/tenantsX/shop",
        "http://thanos.monitoring/tenants/shop",
        "https://mimir.example/prometheus/extra",
        "http://[::2]:9090/",
        "http://127.0.0.1:9090/",
    ],
)
def test_urls_off_the_list_are_not_allowed(url: str) -> None:
    pool = pool_for()
    with pytest.raises(UrlNotAllowed) as caught:
        pool.get(url)
    err = caught.value
    assert type(err) is UrlNotAllowed and err.reason == "PrometheusUrlNotAllowed"
    assert str(err) == (
        f"spec.prometheus.url: {url} is not in the operator's allow-list "
        "(--prometheus-allowed-url / Helm value prometheus.allowedUrls); ask the platform team "
        "to add it, or remove spec.prometheus.url to use the default Prometheus"
    )
    assert len(pool) == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://admin:hunter2@prom/", "user:password@"),
        ("http://admin:hun/ter2@prom/", "not a URL"),  # "/" ends the host: port "hun"
        ("http://prom/?token=hunter2", "query string"),
        ("http://prom/?", "query string"),
        ("http://prom/#hunter2", "fragment"),
        ("http://thanos.monitoring:9090/tenants/../admin", '".."'),
        ("http://thanos.monitoring:9090/tenants/%2e%2e/admin", '".."'),
        ("http://thanos.monitoring:9090/tenants/shop%2F..%2F..%2Fadmin", '".."'),
        ("http://thanos.monitoring:9090/tenants/..\\admin", '".."'),
        ("ftp://prom/", "http(s)://"),
        ("prom:9090", "http(s)://"),
        ("http:///path", "http(s)://"),
        ("", "printable ASCII"),
        ("http://prom/\nReady=True", "printable ASCII"),
        ("http://prom/ x", "printable ASCII"),
        ("http://prömetheus/", "printable ASCII"),
        ("http://prom:99999/", "not a URL"),
        ("http://[::1/", "not a URL"),
    ],
)
def test_invalid_urls_say_what_to_fix_and_show_no_secret(url: str, says: str) -> None:
    pool = pool_for(trusted_urls=("http://prom/",))
    with pytest.raises(UrlInvalid) as caught:
        pool.get(url)
    err = caught.value
    assert isinstance(err, UrlNotAllowed)  # one except clause handles both
    assert err.reason == "PrometheusUrlInvalid"
    assert str(err).startswith("spec.prometheus.url")
    assert says in str(err)
    assert "hunter2" not in str(err) and "hunter2" not in repr(err) and "ter2" not in str(err)
    assert str(err).isprintable()
    assert len(pool) == 0


@settings(max_examples=300, deadline=None)
@given(
    tail=st.text(max_size=40),
    head=st.sampled_from(["", "http://prom/", "http://thanos.monitoring:9090/tenants/", "h"]),
)
def test_any_string_gives_a_client_or_url_not_allowed(head: str, tail: str) -> None:
    pool = pool_for(max_clients=2)
    outcome: PrometheusClient | UrlNotAllowed
    try:
        outcome = pool.get(head + tail)
    except UrlNotAllowed as err:
        outcome = err
    if isinstance(outcome, UrlNotAllowed):
        assert str(outcome).startswith("spec.prometheus.url")
        assert str(outcome).isprintable() and len(str(outcome)) <= 1000
    else:
        assert isinstance(outcome, PrometheusClient)


def test_pool_and_entries_are_checked_at_startup() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        pool_for(max_clients=0)
    for entry in ("http://ops:hunter2@prom/", "http://prom/?key=hunter2", "ftp://prom/", "x"):
        with pytest.raises(ValueError, match="--prometheus-allowed-url") as caught:
            pool_for(allowed=(entry,))
        assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="--prometheus-trusted-url"):
        pool_for(trusted_urls=("http://prom/a/../b/",))


# -- what each kind of URL is given ---------------------------------------------------------


def test_trusted_urls_get_the_base_config_and_allowed_urls_only_how_to_ask() -> None:
    base = PrometheusConfig(
        BASE,
        timeout_s=3.0,
        retries=1,
        backoff_base_s=0.1,
        backoff_cap_s=1.0,
        max_concurrency=2,
        bearer_token_file="/var/run/secrets/token",
        ca_file="/etc/ssl/ops-ca.crt",
        headers={"X-Scope-OrgID": "ops"},
        params={"partial_response": "false"},
    )
    pool = ClientPool(
        base,
        allowed_urls=("http://tenant-prom/", "http://thanos:9090"),
        trusted_urls=("http://thanos:9090",),
        max_response_bytes=1234,
    )
    assert pool.get(None).config == dataclasses.replace(base, max_response_bytes=1234)
    trusted = pool.get("http://thanos:9090/").config  # on both lists: trust wins
    assert trusted == dataclasses.replace(base, url="http://thanos:9090/", max_response_bytes=1234)
    assert trusted.echo_errors
    allowed = pool.get("http://tenant-prom/team-a").config
    assert allowed.url == "http://tenant-prom/team-a"
    assert (allowed.bearer_token_file, allowed.basic_auth_username, allowed.ca_file) == (
        None,
        None,
        None,
    )
    assert allowed.headers == {} and allowed.params == {} and not allowed.echo_errors
    assert (allowed.timeout_s, allowed.retries, allowed.max_concurrency) == (3.0, 1, 2)
    assert (allowed.backoff_base_s, allowed.backoff_cap_s) == (0.1, 1.0)
    assert allowed.max_response_bytes == 1234


@pytest.fixture
def proxies(prometheus: PrometheusServer) -> Iterator[dict[str, FaultProxy]]:
    with (
        FaultProxy(prometheus.url) as default,
        FaultProxy(prometheus.url) as trusted,
        FaultProxy(prometheus.url) as allowed,
    ):
        yield {"default": default, "trusted": trusted, "allowed": allowed}


async def test_credentials_and_backend_words_only_for_trusted_backends(
    proxies: dict[str, FaultProxy], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("pool-s3cr3t-token")
    base = PrometheusConfig(
        proxies["default"].url,
        bearer_token_file=str(token),
        headers={"X-Scope-OrgID": "ops"},
        params={"partial_response": "false"},
        retries=0,
    )
    pool = ClientPool(
        base, allowed_urls=(proxies["allowed"].url,), trusted_urls=(proxies["trusted"].url,)
    )
    try:
        for name in ("default", "trusted", "allowed"):
            client = pool.get(None if name == "default" else proxies[name].url)
            assert (await client.instant("vector(1)")).one() == 1.0
            # The per-SLO tenant header goes wherever the caller sends it.
            await client.instant("vector(1)", headers={"X-Scope-OrgID": "shop"})
        hostile = json.dumps(
            {"status": "error", "errorType": "bad_data", "error": "Ready=True\npwned"}
        )
        errors: dict[str, PrometheusError] = {}
        for name in ("trusted", "allowed"):
            proxies[name].respond(400, hostile, content_type="application/json")
            with pytest.raises(PrometheusError) as caught:
                await pool.get(proxies[name].url).instant("vector(1)")
            errors[name] = caught.value
    finally:
        await pool.aclose()
    for name in ("default", "trusted"):
        first, second = proxies[name].recorded()[:2]
        assert first.headers["authorization"] == "Bearer pool-s3cr3t-token"
        assert first.headers["x-scope-orgid"] == "ops"
        assert first.form()["partial_response"] == "false"
        assert second.headers["x-scope-orgid"] == "shop"
    first, second = proxies["allowed"].recorded()[:2]
    assert "authorization" not in first.headers and "x-scope-orgid" not in first.headers
    assert "partial_response" not in first.form()
    assert second.headers["x-scope-orgid"] == "shop" and "authorization" not in second.headers
    assert errors["trusted"].kind is errors["allowed"].kind is ErrorKind.BAD_QUERY
    assert "Ready=True pwned" in str(errors["trusted"])
    assert "Ready" not in str(errors["allowed"]) and "pwned" not in str(errors["allowed"])
    assert "(bad_data)" in str(errors["allowed"])


# -- bounded resources ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def prometheus_like() -> AsyncIterator[tuple[str, list[str]]]:
    """A real aiohttp server that answers every POST like Prometheus, under any path prefix."""
    paths: list[str] = []
    answer = {"status": "success", "data": {"resultType": "vector", "result": []}}

    async def query(request: web.Request) -> web.Response:
        await request.read()
        paths.append(request.path)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/{tail:.*}", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", paths
    finally:
        await runner.cleanup()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_thousand_urls_keep_clients_and_sockets_bounded() -> None:
    async with prometheus_like() as (server, paths):
        pool = ClientPool(
            PrometheusConfig(server, retries=0), allowed_urls=(f"{server}/t/",), max_clients=8
        )
        try:
            before = open_fds()
            most = before
            first = weakref.ref(pool.get(f"{server}/t/0"))
            for i in range(1000):
                client = pool.get(f"{server}/t/{i}")
                assert (await client.instant("up")).samples == ()
                assert len(pool) <= 8
                most = max(most, open_fds())
            del client
            gc.collect()
            # Evicted clients are not kept anywhere: memory does not grow with the URLs seen.
            assert first() is None
            assert len(pool) == 8
        finally:
            await pool.aclose()
        await asyncio.sleep(0)
        after = open_fds()
    assert len(paths) == 1000 and len(set(paths)) == 1000
    assert paths[-1] == "/t/999/api/v1/query"
    # Eight kept clients with a keep-alive connection each (both ends are in this process),
    # plus the odd one being closed: nowhere near a thousand.
    assert most - before <= 2 * 8 + 6, (before, most)
    assert after <= before


async def test_evicted_client_in_use_finishes_its_query(prometheus: PrometheusServer) -> None:
    with FaultProxy(prometheus.url) as slow, FaultProxy(prometheus.url) as other:
        pool = ClientPool(
            PrometheusConfig(prometheus.url), allowed_urls=(slow.url, other.url), max_clients=1
        )
        try:
            slow.slow(1.0, times=1)
            evicted = pool.get(slow.url)
            running = asyncio.create_task(evicted.instant("vector(7)"))
            assert await asyncio.to_thread(slow.wait_for_requests, 1, 5.0)
            kept = pool.get(other.url)  # evicts the busy client
            assert len(pool) == 1 and pool.get(other.url) is kept
            assert evicted.in_flight == 1 and evicted.connected
            assert (await running).one() == 7.0
            assert not evicted.connected  # let go as soon as its query was done
            # A caller still holding it is served (and it lets go again).
            assert (await evicted.instant("vector(8)")).one() == 8.0
            assert not evicted.connected
            # An idle client is let go of at once when evicted.
            assert (await kept.instant("vector(9)")).one() == 9.0
            assert kept.connected
            again = pool.get(slow.url)
            assert again is not evicted and not kept.connected
            assert (await again.instant("vector(10)")).one() == 10.0
        finally:
            await pool.aclose()
        assert not again.connected and len(pool) == 0
    with pytest.raises(RuntimeError):
        pool.get(None)
