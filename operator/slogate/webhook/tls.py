"""Serving TLS from certificate files that may be replaced while the server runs.

cert-manager (or a Secret update) rewrites the mounted files; the next TLS handshake picks the
new pair up through the SNI callback, which swaps the connection's context. Listening sockets
are never closed, so no admission request fails during a rotation.

With a client CA file the server requires a client certificate signed by it (the API server's,
see docs/webhook.md): any other peer fails the handshake before it can send a review. The CA
file is reloaded like the serving pair. OpenSSL takes the verify mode from the listening
context but the trusted CAs from the swapped-in one, so both carry the requirement.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

log = logging.getLogger("slogate.tls")
Stamp = tuple[tuple[float, int, int], ...]


class ReloadingTLS:
    def __init__(
        self,
        cert_file: str | Path,
        key_file: str | Path,
        client_ca_file: str | Path | None = None,
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_ca_file = Path(client_ca_file) if client_ca_file else None
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._current = self._new_context()
        self.reloads = 0
        # The context the server listens with; it only hands connections to the current one.
        self.context = self._new_context()
        self.context.sni_callback = self._pick

    def _files(self) -> tuple[Path, ...]:
        extra = (self.client_ca_file,) if self.client_ca_file else ()
        return (self.cert_file, self.key_file, *extra)

    def _new_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file is not None:
            ctx.load_verify_locations(cafile=str(self.client_ca_file))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def _stat(self) -> Stamp:
        stats = [os.stat(f) for f in self._files()]
        return tuple((s.st_mtime, s.st_ino, s.st_size) for s in stats)

    def current(self) -> ssl.SSLContext:
        """The context for new handshakes, reloaded when any of its files changed on disk."""
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
                        log.info("reloaded the TLS files %s", ", ".join(map(str, self._files())))
                    except (ssl.SSLError, OSError) as exc:
                        # A half-written pair: keep serving the old one and try again next time.
                        log.warning("TLS reload failed, keeping the old files: %s", exc)
        return self._current

    def _pick(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext
    ) -> None:
        conn.context = self.current()
