"""The controller's /healthz: it fails when the evaluation loop stalls or stops, and only then."""

from __future__ import annotations

import asyncio
import time

from slogate.controller.app import Controller, ControllerOptions
from slogate.controller.evaluator import Evaluator, EvaluatorSettings
from slogate.prometheus import PrometheusConfig


def controller(liveness_after_s: float = 30.0) -> Controller:
    options = ControllerOptions(
        prometheus=PrometheusConfig("http://127.0.0.1:9"), liveness_after_s=liveness_after_s
    )
    return Controller(options)


async def test_a_running_loop_is_alive_and_a_stalled_or_dead_one_is_not() -> None:
    ctl = controller()
    assert ctl.liveness() is None  # still starting, within the grace
    ctl.evaluator = Evaluator(ctl.pool.get, None, EvaluatorSettings(tick_s=0.01))  # type: ignore[arg-type]
    ctl.task = asyncio.create_task(ctl.evaluator.run(active=lambda: False))
    await asyncio.sleep(0.05)
    assert ctl.liveness() is None
    ctl.evaluator.loop_beat = time.monotonic() - 31  # as if the loop had not gone round
    ctl.task.cancel()
    await asyncio.gather(ctl.task, return_exceptions=True)
    assert ctl.liveness() == "the evaluation loop has stopped"
    ctl.task = asyncio.create_task(asyncio.sleep(3600))
    problem = ctl.liveness()
    assert problem is not None and problem.startswith("the evaluation loop has not gone round")
    ctl.task.cancel()
    await asyncio.gather(ctl.task, return_exceptions=True)
    await ctl.pool.aclose()


def test_an_evaluator_that_never_starts_fails_after_the_grace() -> None:
    ctl = controller(liveness_after_s=5)
    ctl.started -= 6
    assert ctl.liveness() == "the evaluator has not started within 5s"
