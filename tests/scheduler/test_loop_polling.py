"""run_bounded: every item once, never more than the limit at once, errors propagate."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.control.loop import run_bounded


async def test_every_item_once_and_never_more_than_the_limit_at_once() -> None:
    running = 0
    most = 0
    seen: list[int] = []

    async def work(item: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001 * (item % 3))  # uneven: workers finish out of step
        seen.append(item)
        running -= 1

    await run_bounded(work, list(range(1000)), 7)
    assert sorted(seen) == list(range(1000))
    assert most == 7


async def test_fewer_items_than_the_limit_and_no_items() -> None:
    seen: list[str] = []

    async def work(item: str) -> None:
        seen.append(item)

    await run_bounded(work, ["a", "b"], 250)
    await run_bounded(work, [], 250)
    assert seen == ["a", "b"]


async def test_an_unexpected_error_propagates_and_stops_the_rest() -> None:
    started: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        if item == 3:
            raise RuntimeError("bug in a driver")
        await asyncio.sleep(0.01)

    with pytest.raises(ExceptionGroup) as caught:
        await run_bounded(work, list(range(100)), 4)
    assert caught.group_contains(RuntimeError, match="bug in a driver")
    assert len(started) < 100  # the other workers were cancelled
