"""``slogate run``: the controller and the webhook in one process and one event loop (local use).

The controller is a kopf operator; the webhook runs its own server and informers
(:meth:`~slogate.webhook.app.Webhook.serve`) beside it. Either ending stops the other.

On SIGINT/SIGTERM the webhook stops first and kopf after it: when kopf stops, it cancels every
task created after it started (it cannot tell whose they are), which would cut the webhook's
own shutdown short. kopf installs its signal handlers as it starts, so ours are put back once
it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import kopf

from slogate.controller.app import Controller
from slogate.webhook.app import Webhook

SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def run_both(controller: Controller, webhook: Webhook) -> None:
    stop_webhook = asyncio.Event()
    stop_controller = asyncio.Event()
    kopf_ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The webhook's informers log each lost connection once; urllib3 would repeat it.
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    def take_signals() -> None:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, stop_webhook.set)

    async def take_signals_back() -> None:
        await kopf_ready.wait()
        take_signals()

    async def controller_role() -> None:
        try:
            await kopf.operator(
                **controller.operator_kwargs(), stop_flag=stop_controller, ready_flag=kopf_ready
            )
        finally:
            stop_webhook.set()

    async def webhook_role() -> None:
        try:
            await webhook.serve(stop_webhook)
        finally:
            stop_controller.set()

    take_signals()
    signals = asyncio.create_task(take_signals_back())
    try:
        await asyncio.gather(controller_role(), webhook_role())
    finally:
        signals.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await signals
