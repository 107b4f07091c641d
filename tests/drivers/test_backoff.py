"""The shared backoff and reconnect supervisor; timers are fired directly, nothing sleeps."""

from __future__ import annotations

import asyncio
import random

import pytest

from drivers.backoff import Backoff, RetryGate, Supervisor, SupervisorState
from drivers.errors import Fatal, Unavailable
from drivers.market.http import RateLimited, retry_after_seconds


class Fixed(random.Random):
    """A random source whose uniform() returns a fixed fraction of the range."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def test_full_jitter_is_capped() -> None:
    top = Backoff(1.0, 8.0, rng=Fixed(1.0))
    assert [top.delay_seconds(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert top.ceiling_seconds(10_000) == 8.0
    bottom = Backoff(1.0, 8.0, rng=Fixed(0.0))
    assert bottom.delay_seconds(1) == 0.0
    assert bottom.delay_seconds(1, retry_after_seconds=5) == 5.0
    assert bottom.delay_seconds(1, retry_after_seconds=500) == 8.0  # never past the cap
    with pytest.raises(ValueError):
        Backoff(10.0, 1.0)


def test_retry_gate_holds_back_until_the_delay_passed() -> None:
    now = [0.0]
    gate = RetryGate(Backoff(2.0, 60.0, rng=Fixed(0.5)), clock=lambda: now[0])
    assert gate.ready()
    assert gate.failed() == 1.0
    assert not gate.ready() and gate.wait_seconds() == 1.0
    now[0] = 1.0
    assert gate.ready()
    gate.failed(retry_after_seconds=30)
    now[0] = 30.0
    assert not gate.ready()
    gate.succeeded()
    assert gate.ready() and gate.failures == 0


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90.0


async def test_supervisor_backs_off_reconnects_and_stops_on_fatal() -> None:
    delays: list[float] = []
    states: list[SupervisorState] = []
    attempts = [
        Unavailable("x", "refused"),
        RateLimited("x", "429", 7.0),
        None,  # connects, then the link drops
        Fatal("x", "bad password"),
    ]

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async def connect(supervisor: Supervisor) -> None:
        outcome = attempts.pop(0)
        if outcome is None:
            supervisor.connected()
            raise Unavailable("x", "connection lost")
        raise outcome

    supervisor = Supervisor(
        "x", connect, Backoff(1.0, 10.0, rng=Fixed(0.5)), sleep=sleep, on_state=states.append
    )
    with pytest.raises(Fatal):
        await supervisor.run()
    assert delays == [0.5, 7.0, 0.5]  # jitter, Retry-After, reset after a success
    assert supervisor.connections == 1
    assert supervisor.state is SupervisorState.FAILED
    assert SupervisorState.CONNECTED in states


async def test_supervisor_cancel_is_clean() -> None:
    async def connect(supervisor: Supervisor) -> None:
        supervisor.connected()
        await asyncio.Event().wait()

    supervisor = Supervisor("y", connect, Backoff())
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.state is SupervisorState.STOPPED
