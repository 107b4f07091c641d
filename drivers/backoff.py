"""Capped full-jitter backoff and the one reconnect supervisor every driver uses.

``Backoff`` computes delays (``uniform(0, min(cap, base * 2**attempt))``),
honouring a server's Retry-After when one was given.  ``Supervisor`` runs a
connection coroutine, sleeps a backoff delay when it fails with ``Unavailable``
and tries again; a ``Fatal`` error (configuration, authentication) stops it,
because retrying in a loop cannot help.  The clock, the sleep and the random
source are injected so tests fire the timers directly instead of sleeping.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers.errors import DriverError, Fatal, Unavailable

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Backoff:
    """Delays for consecutive failures: full jitter up to base * 2**n, capped; reset on success."""

    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    rng: Callable[[], float] = field(default=random.random)
    failures: int = 0

    def __post_init__(self) -> None:
        """Reject a backoff that could spin or never come back."""
        if not 0 < self.base_seconds <= self.cap_seconds:
            raise ValueError(
                f"backoff needs 0 < base ({self.base_seconds}) <= cap ({self.cap_seconds})"
            )

    def next_delay(self, retry_after_seconds: float | None = None) -> float:
        """Count one failure and return how long to wait before the next try."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** min(self.failures, 62))
        self.failures += 1
        delay = self.rng() * ceiling
        if retry_after_seconds is not None:
            # The server named a time: never earlier than it asked, never past the cap.
            delay = max(delay, min(retry_after_seconds, self.cap_seconds))
        return delay

    def reset(self) -> None:
        """Forget past failures (after a success)."""
        self.failures = 0


class RetryGate:
    """Backoff for polled feeds: after a failure, refuses to try again until its delay has passed."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self._clock = clock
        self.not_before: float = float("-inf")

    def ready(self) -> bool:
        """True when a new attempt may be made now."""
        return self._clock() >= self.not_before

    def wait_seconds(self) -> float:
        """Seconds until the next attempt is allowed (0 when ready)."""
        return max(0.0, self.not_before - self._clock())

    def failed(self, retry_after_seconds: float | None = None) -> float:
        """Record a failure; return the delay before the next attempt."""
        delay = self.backoff.next_delay(retry_after_seconds)
        self.not_before = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        """Record a success: the next attempt may come at once."""
        self.backoff.reset()
        self.not_before = float("-inf")


class SupervisorState(enum.StrEnum):
    """Where a supervised connection stands."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    FAILED = "failed"
    STOPPED = "stopped"


class Supervisor:
    """Keeps one connection alive: run it, back off on Unavailable, give up on Fatal."""

    def __init__(
        self,
        name: str,
        connect: Callable[[Supervisor], Awaitable[None]],
        backoff: Backoff,
        *,
        sleep: Sleep = asyncio.sleep,
        on_state: Callable[[SupervisorState], None] | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self.backoff = backoff
        self._sleep = sleep
        self._on_state = on_state
        self.state = SupervisorState.IDLE
        self.connections = 0
        self.last_error: DriverError | None = None

    def _set(self, state: SupervisorState) -> None:
        if state is not self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    def connected(self) -> None:
        """Called by the connection coroutine once it is up: resets the backoff."""
        self.connections += 1
        self.backoff.reset()
        self._set(SupervisorState.CONNECTED)
        if self.last_error is not None:
            log.info("%s connected again", self.name)
            self.last_error = None

    async def run(self) -> None:
        """Run until cancelled; raise Fatal when the connection cannot ever succeed."""
        try:
            while True:
                self._set(SupervisorState.CONNECTING)
                try:
                    await self._connect(self)
                    error: Unavailable = Unavailable(self.name, "connection closed")
                except Fatal as exc:
                    self._set(SupervisorState.FAILED)
                    log.error("%s gave up: %s", self.name, exc.message)
                    raise
                except Unavailable as exc:
                    error = exc
                if self.last_error is None:
                    log.warning("%s down: %s", self.name, error.message)
                self.last_error = error
                delay = self.backoff.next_delay(getattr(error, "retry_after_seconds", None))
                self._set(SupervisorState.BACKING_OFF)
                await self._sleep(delay)
        finally:
            if self.state is not SupervisorState.FAILED:
                self._set(SupervisorState.STOPPED)
