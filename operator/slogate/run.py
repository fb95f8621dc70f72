"""Starting the roles, alone or together: the only module that starts any.

``slogate controller`` and ``slogate webhook`` start one role each, ``slogate run`` both in one
process and one event loop (local use); the CLI turns flags into each role's options and calls
in here. A role's package is imported only when that role starts, so ``slogate webhook`` loads
neither the controller nor kopf.

In ``slogate run`` the controller is a kopf operator; the webhook runs its own server and
informers (:meth:`~slogate.webhook.app.Webhook.serve`) beside it. Either ending stops the other.

On SIGINT/SIGTERM the webhook stops first and kopf after it: when kopf stops, it cancels every
task created after it started (it cannot tell whose they are), which would cut the webhook's
own shutdown short. kopf installs its signal handlers as it starts, so ours are put back once
it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slogate.controller.app import Controller, ControllerOptions
    from slogate.webhook.app import Webhook, WebhookOptions

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def controller(options: ControllerOptions) -> None:
    from slogate.controller.app import Controller

    Controller(options).run()


def webhook(options: WebhookOptions) -> None:
    from slogate.webhook.app import Webhook

    Webhook(options).run()


def both(controller_options: ControllerOptions, webhook_options: WebhookOptions) -> None:
    """Both roles in one process; the webhook's port serves /metrics for both."""
    from slogate.controller.app import Controller, configure_logging
    from slogate.webhook.app import Webhook

    configure_logging(controller_options.log_format)
    controller_role = Controller(dataclasses.replace(controller_options, metrics_port=0))
    asyncio.run(serve_both(controller_role, Webhook(webhook_options)))


async def serve_both(controller: Controller, webhook: Webhook) -> None:
    import kopf  # here, not at the top: slogate webhook starts through this module too

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
