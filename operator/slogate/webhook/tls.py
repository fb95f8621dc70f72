"""Serving TLS from certificate files that may be replaced while the server runs.

cert-manager (or a Secret update) rewrites the mounted files; the next TLS handshake picks the
new pair up through the SNI callback, which swaps the connection's context. Listening sockets
are never closed, so no admission request fails during a rotation (kopf's own server restarts
its listener instead, which drops requests for a moment).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

log = logging.getLogger("slogate.tls")


class ReloadingTLS:
    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._current = self._new_context()
        self.reloads = 0
        # The context the server listens with; it only hands connections to the current one.
        self.context = self._new_context()
        self.context.sni_callback = self._pick

    def _new_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def _stat(self) -> tuple[float, float, int, int]:
        c, k = os.stat(self.cert_file), os.stat(self.key_file)
        return (c.st_mtime, k.st_mtime, c.st_ino, k.st_ino)

    def current(self) -> ssl.SSLContext:
        """The context for new handshakes, reloaded when either file changed on disk."""
        try:
            stamp = self._stat()
        except OSError:
            return self._current  # mid-rotation (a file briefly missing): keep the old pair
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._current = self._new_context()
                        self._stamp = stamp
                        self.reloads += 1
                        log.info("reloaded the serving certificate from %s", self.cert_file)
                    except (ssl.SSLError, OSError) as exc:
                        # A half-written pair: keep serving the old one and try again next time.
                        log.warning("certificate reload failed, keeping the old one: %s", exc)
        return self._current

    def _pick(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        conn.context = self.current()
