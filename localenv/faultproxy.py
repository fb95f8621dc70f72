"""Real proxies that sit in front of real servers and misbehave on command: :class:`FaultProxy`
(HTTP, in front of Prometheus) and :class:`TcpProxy` (TCP, in front of kube-apiserver).

Tests point the code under test at ``proxy.url`` instead of the upstream (the local Prometheus)
and switch faults at runtime, from any thread::

    with FaultProxy(prometheus.url) as proxy:
        client = PrometheusClient(PrometheusConfig(proxy.url))
        proxy.respond(503, times=2)       # the next two requests get 503, then it passes again
        proxy.slow(5)                     # every request waits 5s, then is forwarded
        proxy.down()                      # the port stops listening: connection refused
        proxy.pass_through()              # listening again on the same port, forwarding
        assert proxy.max_in_flight <= 2
        assert proxy.last_request().headers["authorization"] == "Bearer ..."

Modes (:class:`Mode`):

``pass``     forward to the upstream unchanged (502 if the upstream itself is unreachable).
``down``     close the listening socket and every open connection: new connections are refused,
             pooled keep-alive connections break. Switching to any other mode listens again on
             the same port.
``reset``    read the request, then abort the TCP connection (RST) without answering.
``slow``     wait ``delay_s`` and then forward. ``delay_s`` also works with every other mode
             that answers (a slow 503, slow garbage).
``status``   answer ``status`` with ``body`` (default: a short text naming the injected code) and
             extra ``headers`` (e.g. ``Retry-After``), without asking the upstream.
``garbage``  answer 200 ``application/json`` with a body that is not JSON.
``nan``      forward, then rewrite every sample value in the JSON answer to ``value`` ("NaN",
             "+Inf", "-Inf", or any string).
``empty``    forward, then empty the result list of a vector or matrix answer (an error answer
             from the upstream passes unchanged).

``times=n`` applies a fault to the next ``n`` requests only and then returns to ``pass``, which
makes "fails twice, then recovers" deterministic. The proxy counts requests, records them
(method, path, headers, body) and tracks how many were in flight at once. ``prefix="/prom"``
serves only below that path (like a reverse proxy mounting Prometheus at a prefix) and strips it
before forwarding; anything else gets 404. ``tls=(cert_file, key_file)`` serves HTTPS.

Stopping closes every connection and joins every thread it started; no thread is left behind.

:class:`TcpProxy` forwards bytes without reading them, so TLS and client certificates pass
through to the real API server untouched; it can reset every open connection, stop and resume
listening on its port, or hold every byte. :func:`kubeconfig_via` points a copy of the local
control plane's admin kubeconfig at it.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from localenv.processes import free_port

if TYPE_CHECKING:
    from localenv.controlplane import ControlPlane

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed or forced by the proxy: it asks the upstream for identity encoding so that it can
# rewrite bodies, and it always answers with an exact Content-Length.
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "accept-encoding", "content-length", "content-encoding"}

DEFAULT_GARBAGE = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{'


class Mode(StrEnum):
    PASS = "pass"
    DOWN = "down"
    RESET = "reset"
    SLOW = "slow"
    STATUS = "status"
    GARBAGE = "garbage"
    NAN = "nan"
    EMPTY = "empty"


@dataclass(frozen=True)
class Fault:
    """What the proxy does with each request; see the module docstring for the modes."""

    mode: Mode = Mode.PASS
    delay_s: float = 0.0
    status: int = 503
    body: bytes | None = None
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    value: str = "NaN"


@dataclass(frozen=True)
class RecordedRequest:
    """A request the proxy read. Header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    mode: Mode
    received_at: float

    def form(self) -> dict[str, str]:
        """The form-encoded body (or the query string) as a dict, last value winning."""
        raw = self.body.decode("utf-8", errors="replace")
        if not raw:
            raw = urllib.parse.urlsplit(self.path).query
        return dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class FaultProxy:
    """``with FaultProxy(upstream_url) as proxy:`` a fault-injecting HTTP proxy on loopback."""

    def __init__(
        self,
        upstream: str,
        *,
        prefix: str = "",
        port: int = 0,
        tls: tuple[Path | str, Path | str] | None = None,
        upstream_timeout_s: float = 60.0,
        record_limit: int = 10_000,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, got {upstream!r}")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError("prefix must start with '/' and not end with it, e.g. '/prom'")
        self.upstream = upstream
        self.prefix = prefix
        self.port = port
        self.upstream_timeout_s = upstream_timeout_s
        self._upstream = parts
        self._ssl: ssl.SSLContext | None = None
        if tls is not None:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.load_cert_chain(str(tls[0]), str(tls[1]))
        self._lock = threading.Condition()
        self._transition = threading.RLock()
        self._fault = Fault()
        self._remaining: int | None = None
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._recorded: collections.deque[RecordedRequest] = collections.deque(maxlen=record_limit)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        with self._transition:
            if self._started:
                return
            if not self.port:
                self.port = free_port()
            self._started = True
            if self._fault.mode is not Mode.DOWN:
                self._listen()

    def stop(self) -> None:
        """Close every connection and join every thread; safe to call twice."""
        with self._transition:
            self._started = False
            self._unlisten()

    @property
    def url(self) -> str:
        """The URL clients should use, including the prefix."""
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.prefix}"

    # -- faults ----------------------------------------------------------------------------

    @property
    def fault(self) -> Fault:
        with self._lock:
            return self._fault

    @property
    def mode(self) -> Mode:
        return self.fault.mode

    def set(
        self,
        mode: Mode | str,
        *,
        times: int | None = None,
        delay_s: float = 0.0,
        status: int = 503,
        body: bytes | str | None = None,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
        value: str = "NaN",
    ) -> None:
        """Switch to ``mode`` (thread-safe). ``times``: only for the next n requests."""
        mode = Mode(mode)
        if times is not None and (times < 1 or mode is Mode.DOWN):
            # A refused connection never reaches the proxy, so it cannot be counted.
            raise ValueError("times must be >= 1 and cannot be used with down")
        if delay_s < 0 or not 100 <= status <= 599:
            raise ValueError("need delay_s >= 0 and 100 <= status <= 599")
        fault = Fault(
            mode=mode,
            delay_s=delay_s,
            status=status,
            body=body.encode() if isinstance(body, str) else body,
            content_type=content_type,
            headers=dict(headers or {}),
            value=value,
        )
        with self._transition:
            if mode is Mode.DOWN:
                self._swap(fault, None)
                self._unlisten()
            else:
                if self._started and self._server is None:
                    self._listen()
                self._swap(fault, times)

    def pass_through(self) -> None:
        self.set(Mode.PASS)

    def down(self) -> None:
        self.set(Mode.DOWN)

    def reset_connections(self, *, times: int | None = None) -> None:
        self.set(Mode.RESET, times=times)

    def slow(self, delay_s: float, *, times: int | None = None) -> None:
        self.set(Mode.SLOW, delay_s=delay_s, times=times)

    def respond(
        self,
        status: int,
        body: bytes | str | None = None,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
        delay_s: float = 0.0,
        times: int | None = None,
    ) -> None:
        self.set(
            Mode.STATUS,
            status=status,
            body=body,
            content_type=content_type,
            headers=headers,
            delay_s=delay_s,
            times=times,
        )

    def garbage(self, body: bytes | str = DEFAULT_GARBAGE, *, times: int | None = None) -> None:
        self.set(Mode.GARBAGE, body=body, times=times)

    def nan(self, value: str = "NaN", *, times: int | None = None) -> None:
        self.set(Mode.NAN, value=value, times=times)

    def empty(self, *, times: int | None = None) -> None:
        self.set(Mode.EMPTY, times=times)

    # -- observations ----------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests read so far (refused connections in ``down`` never arrive)."""
        with self._lock:
            return self._requests

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Most requests the proxy held at the same time since start or :meth:`clear`."""
        with self._lock:
            return self._max_in_flight

    def recorded(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._recorded)

    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._recorded:
                raise LookupError("the proxy has not seen a request yet")
            return self._recorded[-1]

    def clear(self) -> None:
        """Forget counts and recordings (the fault stays)."""
        with self._lock:
            self._requests = 0
            self._max_in_flight = self._in_flight
            self._recorded.clear()

    def wait_for_requests(self, count: int, timeout_s: float) -> bool:
        """Block until at least ``count`` requests arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._requests >= count, timeout_s)

    # -- internals -------------------------------------------------------------------------

    def _swap(self, fault: Fault, times: int | None) -> None:
        with self._lock:
            self._fault = fault
            self._remaining = times

    def _listen(self) -> None:
        try:
            server = _Server(("127.0.0.1", self.port), _Handler, self)
        except OSError as exc:
            raise RuntimeError(
                f"fault proxy cannot listen on 127.0.0.1:{self.port}: {exc}"
            ) from exc
        if self._ssl is not None:
            # The handshake happens in the handler thread, so one stuck client cannot block
            # the accept loop.
            server.socket = self._ssl.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"faultproxy-{self.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def _unlisten(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.abort_connections()
        server.server_close()  # joins the handler threads
        if thread is not None:
            thread.join()

    def _begin(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Fault:
        with self._lock:
            fault = self._fault
            if self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self._fault, self._remaining = Fault(), None
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._recorded.append(
                RecordedRequest(method, path, headers, body, fault.mode, time.time())
            )
            self._lock.notify_all()
            return fault

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _answer(
        self, fault: Fault, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> _Response:
        if fault.mode is Mode.STATUS:
            text = fault.body
            if text is None:
                reason = http.client.responses.get(fault.status, "")
                text = f"{fault.status} {reason} (injected by faultproxy)\n".encode()
            return _Response(
                fault.status,
                [("Content-Type", fault.content_type), *fault.headers.items()],
                text,
            )
        if fault.mode is Mode.GARBAGE:
            return _Response(
                200,
                [("Content-Type", "application/json")],
                fault.body if fault.body is not None else DEFAULT_GARBAGE,
            )
        if self.prefix and not (path == self.prefix or path.startswith(self.prefix + "/")):
            return _Response(404, [("Content-Type", "text/plain")], b"404 page not found\n")
        response = self._forward(method, path[len(self.prefix) :], headers, body)
        if fault.mode in (Mode.NAN, Mode.EMPTY) and response.status == 200:
            response.body = _rewrite(response.body, fault)
        return response

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Response:
        up = self._upstream
        conn_type = (
            http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_type(up.hostname or "", up.port, timeout=self.upstream_timeout_s)
        out_headers = {k: v for k, v in headers.items() if k not in _NOT_FORWARDED}
        out_headers["accept-encoding"] = "identity"
        try:
            conn.request(
                method, up.path.rstrip("/") + (path or "/"), body=body, headers=out_headers
            )
            upstream = conn.getresponse()
            data = upstream.read()
            kept = [(k, v) for k, v in upstream.getheaders() if k.lower() not in _NOT_FORWARDED]
            return _Response(upstream.status, kept, data)
        except (OSError, http.client.HTTPException) as exc:
            return _Response(
                502,
                [("Content-Type", "text/plain")],
                f"faultproxy: upstream {self.upstream} failed: {exc}\n".encode(),
            )
        finally:
            conn.close()


def _rewrite(body: bytes, fault: Fault) -> bytes:
    """Apply ``nan`` or ``empty`` to a Prometheus API answer; anything else passes unchanged."""
    try:
        payload: Any = json.loads(body)
        data = payload["data"]
        result_type, result = data["resultType"], data["result"]
    except (ValueError, KeyError, TypeError):
        return body
    if fault.mode is Mode.EMPTY:
        if result_type in ("vector", "matrix"):
            data["result"] = []
    elif result_type == "vector":
        for sample in result:
            if "value" in sample:
                sample["value"] = [sample["value"][0], fault.value]
    elif result_type == "matrix":
        for series in result:
            if "values" in series:
                series["values"] = [[t, fault.value] for t, _ in series["values"]]
    elif result_type == "scalar":
        data["result"] = [result[0], fault.value]
    return json.dumps(payload).encode()


class _Server(ThreadingHTTPServer):
    # Non-daemon handler threads are joined by server_close(): nothing outlives stop().
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[_Handler], proxy: FaultProxy):
        self.proxy = proxy
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._aborted: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Registered in the accept thread, before the handler thread exists, so that
        # abort_connections() cannot miss a connection that is just starting.
        with self._connections_lock:
            if self.closing.is_set():
                self.shutdown_request(request)
                return
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
            aborted = request in self._aborted
            self._aborted.discard(request)
        if aborted:
            # No shutdown(SHUT_WR) first: that would send an orderly FIN before the reset.
            request.close()
        else:
            super().shutdown_request(request)

    def mark_aborted(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._aborted.add(request)

    def abort_connections(self) -> None:
        """Wake every handler: sleeping ones via ``closing``, reading ones via the socket."""
        self.closing.set()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            # Clients that give up (timeouts, resets) are the point of this server, not errors.
            log.debug("faultproxy: connection from %s: %s", client_address, error)
        else:
            log.exception("faultproxy: failed to handle a request from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real Prometheus
    server: _Server

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("faultproxy: " + format, *args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        fault = proxy._begin(self.command, self.path, headers, body)
        response: _Response | None = None
        try:
            cut_off = bool(fault.delay_s) and self.server.closing.wait(fault.delay_s)
            # DOWN here means the request slipped in while the listener was closing.
            if not cut_off and fault.mode not in (Mode.RESET, Mode.DOWN):
                response = proxy._answer(fault, self.command, self.path, headers, body)
        finally:
            # Counted out before the first byte is sent: a client that got its answer and
            # sends the next request must never see the previous one still in flight.
            proxy._end()
        if response is None:
            self._abort()
        else:
            self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _abort(self) -> None:
        """Drop the connection with a TCP reset instead of an orderly close."""
        self.close_connection = True
        if _reset_on_close(self.connection):
            self.server.mark_aborted(self.connection)


def _reset_on_close(sock: socket.socket) -> bool:
    """Linger 0: closing ``sock`` sends a TCP reset instead of an orderly FIN. False if the
    socket is already gone."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        return False
    return True


# -- a TCP proxy in front of kube-apiserver --------------------------------------------------------


class TcpProxy:
    """Forwards TCP connections on a loopback port to ``target``; can reset them all at once.

    ``drop()`` aborts every open connection with a TCP reset (a dropped watch, a load balancer
    restarting) while still accepting new ones; ``refuse()`` stops listening, ``accept()`` listens
    again on the same port; ``stall()`` holds every byte in both directions (an API server that
    accepts but does not answer) until ``flow()``.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.dropped = 0
        self._flowing = threading.Event()
        self._flowing.set()

    def __enter__(self) -> TcpProxy:
        self.accept()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flow()
        self.refuse()
        self.drop()
        for t in self._threads:
            t.join(5)

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def accept(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            self._listener = sock
        thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def refuse(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def drop(self) -> int:
        """Reset every open connection; returns how many were cut."""
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            # Linger 0 turns the final close into a reset. shutdown(SHUT_RD) first wakes the pump
            # thread blocked in recv(): a socket is only released (and the RST sent) once no
            # system call holds it any more.
            _reset_on_close(conn)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                conn.close()
        self.dropped += len(conns)
        return len(conns)

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.5):
                    pass
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                self._conns.discard(src)


def kubeconfig_via(cp: ControlPlane, proxy: TcpProxy, path: Path) -> Path:
    """A copy of the admin kubeconfig whose server is the proxy (same certificates)."""
    config = yaml.safe_load(cp.kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = proxy.url()
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
