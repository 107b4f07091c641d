"""Slots: bounded holders, waiters marked ahead served first, cancellation gives slots back."""

from __future__ import annotations

import asyncio

import pytest

from drivers.slots import Slots


async def test_never_more_holders_than_slots_and_ahead_waiters_go_first() -> None:
    slots = Slots(2)
    order: list[str] = []
    holding = 0
    most = 0
    gate = asyncio.Event()

    async def hold(name: str, ahead: bool) -> None:
        nonlocal holding, most
        await slots.acquire(ahead)
        holding += 1
        most = max(most, holding)
        order.append(name)
        await gate.wait()
        holding -= 1
        slots.release()

    first = [asyncio.create_task(hold(f"first{i}", ahead=False)) for i in range(2)]
    await asyncio.sleep(0)
    # Both slots are held; queue reads, then commands: the commands must overtake the reads.
    waiting = [asyncio.create_task(hold(f"read{i}", ahead=False)) for i in range(3)]
    await asyncio.sleep(0)
    waiting += [asyncio.create_task(hold(f"command{i}", ahead=True)) for i in range(3)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*first, *waiting)
    assert order == [
        "first0", "first1", "command0", "command1", "command2", "read0", "read1", "read2"
    ]  # fmt: skip
    assert most == 2


async def test_a_free_slot_is_taken_at_once_unless_someone_is_waiting() -> None:
    slots = Slots(1)
    await slots.acquire(ahead=False)  # free: no wait
    waiter = asyncio.create_task(slots.acquire(ahead=False))
    await asyncio.sleep(0)
    assert not waiter.done()
    slots.release()  # handed straight to the waiter, not freed for a newcomer
    await waiter
    late = asyncio.create_task(slots.acquire(ahead=True))
    await asyncio.sleep(0)
    assert not late.done()
    slots.release()
    await late
    slots.release()
    await asyncio.wait_for(slots.acquire(ahead=False), 1)  # free again


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    slots = Slots(1)
    await slots.acquire(ahead=False)
    cancelled = asyncio.create_task(slots.acquire(ahead=True))
    behind = asyncio.create_task(slots.acquire(ahead=False))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    slots.release()  # skips the cancelled waiter
    await asyncio.wait_for(behind, 1)
    # A waiter cancelled just as the slot is handed to it gives the slot back.
    handed = asyncio.create_task(slots.acquire(ahead=False))
    await asyncio.sleep(0)
    slots.release()  # hands the slot to ``handed`` ...
    handed.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await handed
    await asyncio.wait_for(slots.acquire(ahead=False), 1)  # the slot came back
