"""Liveness and readiness endpoints for both roles: plain HTTP, answered from process state.

A check returns ``None`` when healthy, or one line saying what is wrong; the endpoint answers
200 ``ok`` or 503 with that line, so ``kubectl describe pod`` shows why a probe failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], str | None]


async def start_probe_server(
    port: int,
    checks: Mapping[str, Check],
    registry: CollectorRegistry | None = None,
    host: str = "0.0.0.0",
) -> web.AppRunner:
    """Serve each ``path -> check`` on ``port``, and ``/metrics`` of ``registry`` when given."""

    def endpoint(check: Check) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def answer(_: web.Request) -> web.StreamResponse:
            problem = check()
            if problem is None:
                return web.Response(text="ok")
            return web.Response(status=503, text=problem)

        return answer

    app = web.Application()
    for path, check in checks.items():
        app.router.add_get(path, endpoint(check))
    if registry is not None:
        metrics_registry = registry

        async def metrics_page(_: web.Request) -> web.Response:
            body = generate_latest(metrics_registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
