"""A chaos admission webhook: the real API server calls it, and it refuses on command.

A 409 it asks for is a real 409 the operator receives from the API server (the answer to its own
write), so the reliability tests see conflicts exactly as a busy cluster produces them::

    chaos = ChaosWebhook(CertificateAuthority("chaos-ca"), workdir)
    cp.apply(chaos.configuration([{"apiGroups": ["slogate.dev"], ...}]))
    chaos.fail_next(2, only=lambda request: request["name"] == "checkout")
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localenv.certs import CertificateAuthority


class ChaosWebhook:
    """A validating webhook the real API server calls for ``resources``; it refuses the next
    ``n`` requests with an HTTP-like status code (409 Conflict by default) and allows the rest.
    """

    def __init__(self, ca: CertificateAuthority, workdir: Path, name: str = "chaos") -> None:
        self.ca = ca
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = workdir / "chaos.crt", workdir / "chaos.key"
        ca.serving("chaos-webhook").write(cert, key)
        self._lock = threading.Lock()
        self._remaining = 0
        self._code = 409
        self._only: Callable[[dict[str, Any]], bool] = lambda _: True
        self.refused: list[dict[str, Any]] = []
        self.seen = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                review = json.loads(body)
                response = outer._answer(review["request"])
                out = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": response,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def fail_next(
        self, n: int, code: int = 409, only: Callable[[dict[str, Any]], bool] | None = None
    ) -> None:
        with self._lock:
            self._remaining, self._code = n, code
            self._only = only or (lambda _: True)
            self.refused.clear()

    @property
    def remaining(self) -> int:
        with self._lock:
            return self._remaining

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.seen += 1
            if self._remaining > 0 and self._only(request):
                self._remaining -= 1
                self.refused.append(request)
                return {
                    "uid": request["uid"],
                    "allowed": False,
                    "status": {
                        "code": self._code,
                        "reason": "Conflict" if self._code == 409 else "InternalError",
                        "message": "injected by the reliability tests' chaos webhook: the "
                        "object has been modified; please apply your changes to the latest "
                        "version and try again",
                    },
                }
        return {"uid": request["uid"], "allowed": True}

    def configuration(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"slogate-{self.name}"},
            "webhooks": [
                {
                    "name": f"{self.name}.reliability.slogate.dev",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{self.port}/",
                        "caBundle": base64.b64encode(self.ca.cert_pem).decode(),
                    },
                    "rules": rules,
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": 3,
                }
            ],
        }
