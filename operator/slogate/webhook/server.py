"""HTTP servers of the webhook role: AdmissionReviews over TLS, probes and metrics over plain HTTP.

The admission server routes by path to handlers that take a parsed
:class:`~slogate.webhook.review.AdmissionRequest` and return an
:class:`~slogate.webhook.review.AdmissionAnswer`; a route is one entry in ``routes``. Nothing is
kept per request, so reviews from anyone who can reach the port (with ``--client-ca-file``,
only the API server can) cost memory only while they are answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import Counter

from slogate import metrics
from slogate.webhook.review import AdmissionAnswer, AdmissionRequest, parse_review, render_review
from slogate.webhook.tls import ReloadingTLS

log = logging.getLogger("slogate.webhook.server")

Handler = Callable[[AdmissionRequest], Awaitable[AdmissionAnswer]]
Routes = Mapping[str, Handler]

# The API server accepts request bodies up to 3 MiB and an UPDATE review carries the object
# twice (object and oldObject), so a legitimate review can be about 6 MiB of JSON.
DEFAULT_MAX_REVIEW_BYTES = 8 * 1024 * 1024
# Bodies above this are parsed in a thread, so one huge review does not stall the others.
_PARSE_IN_THREAD_BYTES = 256 * 1024

bad_reviews = Counter(
    "slogate_webhook_bad_reviews_total",
    "Requests to the admission port that got no verdict: malformed (400), too large (413, the "
    "API server then applies failurePolicy) or a handler error (500).",
    ("reason",),
    registry=metrics.REGISTRY,
)


class AdmissionServer:
    """HTTPS server for AdmissionReviews, with hot certificate reload (:class:`ReloadingTLS`).

    With ``wait_for`` (the informers' "listed" event) the port opens only once it is set: before
    that a request would be judged against an empty index and admitted as ungated, while a
    closed port lets the API server apply the configured ``failurePolicy``. ``listening`` is set
    once the port accepts connections; readiness waits for it.
    """

    def __init__(
        self,
        tls: ReloadingTLS,
        routes: Routes,
        port: int,
        host: str = "0.0.0.0",
        *,
        max_review_bytes: int = DEFAULT_MAX_REVIEW_BYTES,
        wait_for: asyncio.Event | None = None,
    ) -> None:
        self.tls = tls
        self.routes = dict(routes)
        self.port = port
        self.host = host
        self.max_review_bytes = max_review_bytes
        self.wait_for = wait_for
        self.listening = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._last_too_large = -float("inf")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_review_bytes)
        for path, handler in self.routes.items():
            app.router.add_post(path, self._endpoint(path, handler))
        return app

    async def serve(self) -> None:
        """Open the port (after ``wait_for``) and serve until cancelled."""
        if self.wait_for is not None:
            await self.wait_for.wait()
        runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.tls.context)
        try:
            await site.start()
            self.listening.set()
            log.info(
                "admission webhook listening on https://%s:%d (%s)",
                self.host,
                self.port,
                ", ".join(self.routes),
            )
            await asyncio.Event().wait()
        finally:
            self.listening.clear()
            await runner.cleanup()

    def _endpoint(
        self, path: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                bad_reviews.labels("too_large").inc()
                self._warn_too_large(path, request.content_length)
                raise
            try:
                if len(body) > _PARSE_IN_THREAD_BYTES:
                    payload = await asyncio.to_thread(json.loads, body)
                else:
                    payload = json.loads(body)
                review = parse_review(payload)
            except ValueError as exc:  # also JSON and UTF-8 decoding errors
                bad_reviews.labels("malformed").inc()
                return web.Response(status=400, text=f"not an AdmissionReview: {_short(exc)}")
            try:
                answer = await handler(review)
            except Exception:
                bad_reviews.labels("error").inc()
                log.exception("admission handler for %s failed", path)
                return web.Response(status=500, text="internal error")
            return web.json_response(render_review(review.uid, answer))

        return endpoint

    def _warn_too_large(self, path: str, size: int | None) -> None:
        # A review this large cannot be judged (the API server applies failurePolicy); say so,
        # but at most once a minute: anyone who reaches the port could repeat it.
        now = time.monotonic()
        if now - self._last_too_large >= 60:
            self._last_too_large = now
            log.warning(
                "refused an AdmissionReview of %s bytes on %s: above --max-review-bytes (%d)",
                size if size is not None else "unknown",
                path,
                self.max_review_bytes,
            )


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."
