"""HTTP servers of the webhook role: admission over TLS, probes and metrics over plain HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from slogate import metrics
from slogate.webhook.tls import ReloadingTLS

log = logging.getLogger("slogate.webhook.server")


class AdmissionServer:
    """A kopf admission server (``settings.admission.server``) with hot certificate reload.

    kopf calls it with its request handler and reads the client configs it yields; slogate does
    not let kopf manage the ValidatingWebhookConfiguration (the chart or the local environment
    owns it), so the yielded config is informational.

    With ``wait_for`` (the webhook's "indexes loaded" event) the port opens only once it is set:
    before that a request would be judged against an empty index and admitted as ungated, while
    a closed port lets the API server apply the configured ``failurePolicy``. ``listening`` is
    set once the port accepts connections; readiness waits for it.
    """

    def __init__(
        self,
        tls: ReloadingTLS,
        port: int,
        host: str = "0.0.0.0",
        wait_for: asyncio.Event | None = None,
    ) -> None:
        self.tls = tls
        self.port = port
        self.host = host
        self.wait_for = wait_for
        self.listening = asyncio.Event()

    async def __call__(self, fn: Any) -> AsyncIterator[dict[str, Any]]:
        async def serve(request: web.Request) -> web.Response:
            try:
                payload = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                return web.Response(status=400, text="the body is not an AdmissionReview")
            webhook = request.match_info["id"]
            try:
                response = await fn(
                    payload, webhook=webhook, headers=dict(request.headers), sslpeer={}
                )
            except Exception as exc:
                log.warning("bad admission request on /%s: %s", webhook, exc)
                return web.Response(status=400, text=str(exc))
            return web.json_response(response)

        if self.wait_for is not None:
            await self.wait_for.wait()
        app = web.Application()
        app.router.add_post("/{id}", serve)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.tls.context)
        await site.start()
        self.listening.set()
        log.info("admission webhook listening on https://%s:%d", self.host, self.port)
        try:
            yield {"url": f"https://127.0.0.1:{self.port}"}
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


async def start_probe_server(port: int, ready: Callable[[], bool]) -> web.AppRunner:
    """``/healthz`` (alive), ``/readyz`` (``ready()``: indexes loaded and admission port
    listening), ``/metrics`` on plain HTTP."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready")
        return web.Response(status=503, text="indexes are still loading")

    async def metrics_page(_: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
