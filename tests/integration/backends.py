"""Real HTTP backends for tests that need answers a proxy cannot give without holding them.

``Backend`` is an HTTP/1.1 server on 127.0.0.1 that answers every POST with ``answer(backend,
handler)``: endless or lazily generated bodies (``endless``), fixed bytes (``fixed``). Used by
the Prometheus client's tests and by the tenancy tests (a backend that answers 200 MB).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

MiB = 1024 * 1024
BLANKS = b" " * (64 * 1024)


class Backend:
    """A real HTTP/1.1 server on 127.0.0.1 that answers every POST with ``answer(self, handler)``.

    For answers the fault proxy cannot give without holding them: endless or lazily generated
    bodies. ``sent`` counts the body bytes the socket accepted; stopping joins every thread.
    """

    def __init__(self, answer: Callable[[Backend, BaseHTTPRequestHandler], None]) -> None:
        backend = self
        self.sent = 0
        self.requests = 0
        self.release = threading.Event()  # lets a held answer go on, so that stop can join it

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                backend.requests += 1
                self.close_connection = True
                answer(backend, self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write(self, handler: BaseHTTPRequestHandler, data: bytes) -> bool:
        """Send ``data``; False once the client has gone."""
        try:
            handler.wfile.write(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join()

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def endless(
    total: int,
    *,
    status: int = 200,
    announce: bool = False,
    hold: bool = False,
    chunk: bytes = BLANKS,
    pause_s: float = 0.0,
) -> Callable[[Backend, BaseHTTPRequestHandler], None]:
    """An answer of ``total`` body bytes, generated as it is sent (never held in memory), to
    every request."""

    def answer(backend: Backend, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if announce:
            handler.send_header("Content-Length", str(total))
        handler.send_header("Connection", "close")  # without a length: the body ends at close
        handler.end_headers()
        if hold:
            backend.release.wait(10)
        sent = 0
        while sent < total and backend.write(handler, chunk):
            sent += len(chunk)
            if pause_s:
                time.sleep(pause_s)

    return answer


def fixed(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> Callable[[Backend, BaseHTTPRequestHandler], None]:
    def answer(backend: Backend, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        backend.write(handler, body)

    return answer
