"""The fault proxy itself: each mode on the wire, thread-safe switching, and a clean stop.

Plain stdlib HTTP (urllib, http.client, raw sockets) talks to the proxy here, so these tests do
not depend on the Prometheus client they are used to test.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from localenv.faultproxy import FaultProxy, Mode
from localenv.prometheus import PrometheusServer

pytestmark = pytest.mark.prometheus


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url) as p:
        yield p


def query(url: str, promql: str = "vector(7)", timeout: float = 5.0) -> tuple[int, bytes]:
    body = urllib.parse.urlencode({"query": promql, "time": "1700000000"}).encode()
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query", data=body, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def proxy_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith("faultproxy-") or "process_request_thread" in t.name
    ]


def test_pass_forwards_and_records(proxy: FaultProxy) -> None:
    status, body = query(proxy.url)
    assert status == 200
    assert json.loads(body)["data"]["result"][0]["value"] == [1700000000, "7"]
    seen = proxy.last_request()
    assert (seen.method, seen.path, seen.mode) == ("POST", "/api/v1/query", Mode.PASS)
    assert seen.form() == {"query": "vector(7)", "time": "1700000000"}
    assert proxy.requests == 1 and proxy.in_flight == 0 and proxy.max_in_flight == 1


def test_status_garbage_nan_empty_on_the_wire(proxy: FaultProxy) -> None:
    proxy.respond(503, headers={"Retry-After": "1"})
    assert query(proxy.url) == (503, b"503 Service Unavailable (injected by faultproxy)\n")
    proxy.respond(401, "who are you?")
    assert query(proxy.url) == (401, b"who are you?")
    proxy.garbage()
    status, body = query(proxy.url)
    assert status == 200
    with pytest.raises(ValueError):  # noqa: PT011 - any JSON decoding error
        json.loads(body)
    proxy.nan("+Inf")
    assert json.loads(query(proxy.url)[1])["data"]["result"][0]["value"][1] == "+Inf"
    assert json.loads(query(proxy.url, "scalar(vector(1))")[1])["data"]["result"][1] == "+Inf"
    proxy.empty()
    assert json.loads(query(proxy.url)[1])["data"] == {"resultType": "vector", "result": []}
    # An error from the upstream passes through even in a rewriting mode.
    status, body = query(proxy.url, "sum(")
    assert status == 400 and json.loads(body)["errorType"] == "bad_data"


def test_times_applies_a_fault_to_the_next_requests_only(proxy: FaultProxy) -> None:
    proxy.respond(500, times=2)
    assert [query(proxy.url)[0] for _ in range(3)] == [500, 500, 200]
    assert proxy.mode is Mode.PASS
    assert [r.mode for r in proxy.recorded()] == [Mode.STATUS, Mode.STATUS, Mode.PASS]
    with pytest.raises(ValueError, match="times"):
        proxy.set(Mode.DOWN, times=1)


def test_down_refuses_then_listens_again_on_the_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    proxy.down()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    proxy.pass_through()
    assert proxy.port == port
    assert query(proxy.url)[0] == 200


def test_down_breaks_open_keep_alive_connections(proxy: FaultProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/api/v1/query?query=vector(1)")
    assert conn.getresponse().read()
    proxy.down()

    def ask_again() -> None:
        conn.request("GET", "/api/v1/query?query=vector(1)")
        conn.getresponse()

    with pytest.raises((ConnectionError, http.client.HTTPException)):
        ask_again()
    conn.close()


def test_reset_aborts_the_connection(proxy: FaultProxy) -> None:
    proxy.reset_connections()

    def read_all() -> None:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n\r\n")
            while sock.recv(1024):
                pass

    with pytest.raises(ConnectionResetError):
        read_all()
    assert proxy.requests == 1


def test_slow_delays_and_stop_does_not_wait_for_it(prometheus: PrometheusServer) -> None:
    proxy = FaultProxy(prometheus.url)
    with proxy:
        proxy.slow(0.3)
        started = time.monotonic()
        assert query(proxy.url)[0] == 200
        assert time.monotonic() - started >= 0.3
        proxy.slow(60)
        cut_off: list[BaseException] = []

        def wait_for_answer() -> None:
            try:
                query(proxy.url, timeout=60)
            except OSError as exc:
                cut_off.append(exc)

        waiting = threading.Thread(target=wait_for_answer, daemon=True)
        waiting.start()
        assert proxy.wait_for_requests(2, 5)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    waiting.join(5)
    assert not waiting.is_alive()  # the stuck client was cut off, not left hanging
    assert len(cut_off) == 1
    assert proxy_threads() == []


def test_prefix_and_upstream_failure(prometheus: PrometheusServer) -> None:
    with FaultProxy(prometheus.url, prefix="/prom") as prefixed:
        assert query(prefixed.url)[0] == 200
        assert query(prefixed.url.removesuffix("/prom"))[0] == 404
    with FaultProxy("http://127.0.0.1:9") as dead_upstream:
        status, body = query(dead_upstream.url)
    assert status == 502 and b"upstream" in body


def test_chunked_request_bodies_are_forwarded(proxy: FaultProxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    form = b"query=vector(3)&time=1700000000"
    conn.putrequest("POST", "/api/v1/query")
    conn.putheader("Content-Type", "application/x-www-form-urlencoded")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for part in (form[:10], form[10:]):
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    assert json.loads(response.read())["data"]["result"][0]["value"][1] == "3"
    conn.close()
    assert proxy.last_request().body == form


def test_mode_switches_under_load_are_safe(
    proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="localenv.faultproxy")
    outcomes: list[int | str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _ = query(proxy.url, timeout=5)
                result: int | str = status
            # down and reset are meant to break connections, even halfway through an answer
            except (OSError, http.client.HTTPException) as exc:
                result = type(exc).__name__
            with lock:
                outcomes.append(result)

    clients = [threading.Thread(target=client) for _ in range(6)]
    for t in clients:
        t.start()
    rng = random.Random(9)
    switches: list[Callable[[], None]] = [
        proxy.pass_through,
        proxy.down,
        proxy.reset_connections,
        proxy.garbage,
        proxy.empty,
        lambda: proxy.nan("NaN"),
        lambda: proxy.respond(503),
        lambda: proxy.slow(0.01),
    ]
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        rng.choice(switches)()
        time.sleep(0.02)
    proxy.pass_through()
    stop.set()
    for t in clients:
        t.join(10)
    assert not any(t.is_alive() for t in clients)
    assert {200, 503} <= set(outcomes)
    broken = {"URLError", "RemoteDisconnected", "ConnectionResetError", "ConnectionRefusedError",
              "BadStatusLine", "IncompleteRead"}  # fmt: skip
    assert set(outcomes) <= {200, 503} | broken
    assert proxy.in_flight == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_stop_leaves_no_threads_and_restarts_cleanly(prometheus: PrometheusServer) -> None:
    before = proxy_threads()
    proxy = FaultProxy(prometheus.url)
    with proxy:
        for _ in range(5):
            assert query(proxy.url)[0] == 200
        keep_alive = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
        keep_alive.request("GET", "/api/v1/query?query=vector(1)")
        keep_alive.getresponse().read()  # its handler thread now waits for the next request
        proxy.down()
        proxy.pass_through()
    keep_alive.close()
    assert proxy_threads() == before == []
    proxy.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    assert refused.value.errno == errno.ECONNREFUSED
