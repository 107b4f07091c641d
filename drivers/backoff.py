"""Capped exponential backoff with full jitter: the one retry-delay rule every part uses.

``Backoff`` is the rule (stateless): the delay before retry ``attempt`` is uniform in
``[0, min(cap, base * 2**(attempt-1))]``, and never shorter than a Retry-After the
server named (capped too).  ``RetryGate`` (polled feeds) and ``Supervisor`` (one
reconnect loop for long-lived connections) count the failures.  A ``Fatal`` error
(configuration, authentication) stops the supervisor: retrying cannot help.  The
clock, the sleep and the random source are injected so tests fire timers directly.
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


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``attempt`` (1-based): uniform in [0, min(cap, base * 2**(attempt-1))]."""

    base_seconds: float = 1.0
    cap_seconds: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        """Reject a backoff that could spin or never come back."""
        if not 0 < self.base_seconds <= self.cap_seconds:
            raise ValueError(
                f"backoff needs 0 < base ({self.base_seconds}) <= cap ({self.cap_seconds})"
            )

    def ceiling_seconds(self, attempt: int) -> float:
        """The largest delay the given attempt may wait."""
        exponent = min(max(0, attempt - 1), 62)
        return float(min(self.cap_seconds, self.base_seconds * 2.0**exponent))

    def delay_seconds(self, attempt: int, retry_after_seconds: float | None = None) -> float:
        """A jittered delay for the given attempt; at least the server's Retry-After (capped)."""
        delay = self.rng.uniform(0.0, self.ceiling_seconds(attempt))
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, self.cap_seconds))
        return delay


class RetryGate:
    """Backoff for polled feeds: after a failure, refuses to try again until its delay has passed."""

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff
        self._clock = clock
        self.failures = 0
        self.not_before: float = float("-inf")

    def ready(self) -> bool:
        """True when a new attempt may be made now."""
        return self._clock() >= self.not_before

    def wait_seconds(self) -> float:
        """Seconds until the next attempt is allowed (0 when ready)."""
        return max(0.0, self.not_before - self._clock())

    def failed(self, retry_after_seconds: float | None = None) -> float:
        """Record a failure; return the delay before the next attempt."""
        self.failures += 1
        delay = self.backoff.delay_seconds(self.failures, retry_after_seconds)
        self.not_before = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        """Record a success: the next attempt may come at once."""
        self.failures = 0
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
        self.failures = 0
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
        self.failures = 0
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
                self.failures += 1
                delay = self.backoff.delay_seconds(
                    self.failures, getattr(error, "retry_after_seconds", None)
                )
                self._set(SupervisorState.BACKING_OFF)
                await self._sleep(delay)
        finally:
            if self.state is not SupervisorState.FAILED:
                self._set(SupervisorState.STOPPED)
