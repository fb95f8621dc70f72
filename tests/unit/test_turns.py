"""Turns: the per-namespace queue of SLOs that run alone (priority first, then arrival)."""

from __future__ import annotations

import asyncio

from slogate.controller.evaluator import Turns


async def test_at_most_slots_hold_a_turn_and_priority_zero_goes_first() -> None:
    turns = Turns(2)
    order: list[str] = []
    running = 0
    most = 0
    release = asyncio.Event()

    async def holder(name: str, priority: int) -> None:
        nonlocal running, most
        async with turns.take(priority):
            running += 1
            most = max(most, running)
            order.append(name)
            await release.wait()
            running -= 1

    first = [asyncio.create_task(holder(f"first-{i}", 1)) for i in range(2)]
    await asyncio.sleep(0)
    late = [asyncio.create_task(holder(f"new-{i}", 1)) for i in range(3)]
    await asyncio.sleep(0)
    healthy = asyncio.create_task(holder("healthy", 0))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*first, *late, healthy)
    assert most == 2
    # The healthy SLO arrived last but was served before every waiting new one.
    assert order[:3] == ["first-0", "first-1", "healthy"]
    assert turns.free == 2


async def test_a_cancelled_waiter_does_not_lose_a_turn() -> None:
    turns = Turns(1)
    gate = asyncio.Event()

    async def hold() -> None:
        async with turns.take(0):
            await gate.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    gate.set()
    await holder
    assert waiter.cancelled() or waiter.done()
    assert turns.free == 1
    async with turns.take(1):
        assert turns.free == 0
    assert turns.free == 1
