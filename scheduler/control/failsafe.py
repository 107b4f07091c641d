"""The dead-man path: put every device into the safe state (sleep) without the control loop.

systemd runs ``wattmux failsafe`` (deploy/wattmux-failsafe.service) when the
daemon has failed and will not be restarted.  It reads the same config,
commands every device to sleep through the same drivers (with read-back
confirmation), records an intent per command in the store when the store can
be opened (a broken store must not stop the failsafe), and reports which
devices it could not curtail.  Nothing one device does (a hostile reply, a
driver bug) reaches past that device: every exception is contained per device
and reported as that device's outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from drivers.asic.registry import AsicDriver, create_asic_driver
from drivers.errors import DriverError
from scheduler.config.devices import pools_of
from scheduler.config.schema import WattmuxConfig
from scheduler.core.model import Device, Outcome, OutcomeStatus, Workload
from scheduler.core.reasons import Reason
from scheduler.store.journal import Store

log = logging.getLogger(__name__)

FAILSAFE_REASON = Reason.FAILSAFE  # kept under this name: the failsafe tests use it


@dataclass(frozen=True, slots=True)
class FailsafeReport:
    """What the failsafe did: one outcome per device."""

    outcomes: tuple[Outcome, ...]

    @property
    def failed(self) -> tuple[Outcome, ...]:
        """Outcomes of devices that are not confirmed asleep."""
        return tuple(o for o in self.outcomes if o.status is not OutcomeStatus.CONFIRMED)


async def curtail_all(
    config: WattmuxConfig,
    *,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_outcome: Callable[[Outcome], None] | None = None,
    pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> FailsafeReport:
    """Command every configured device to sleep; return every outcome.

    All devices are commanded at once: the drivers' own command slots
    (``command_concurrency``) bound the sockets, and commands go ahead of
    read-backs, so a fleet-wide failsafe reaches every device before it verifies
    any.  A device that answers but does not read back asleep within
    ``failsafe_confirm_seconds`` (a command lost or ignored) is sent sleep again,
    up to ``failsafe_attempts`` commands; one that cannot be reached or answers
    garbage is reported at once.  ``on_outcome`` sees each device's final
    outcome as it comes (progress).
    """
    control = config.control
    pools = pools_of(config)
    safe = Workload.sleep()
    targets: list[tuple[Device, AsicDriver]] = []
    unreached: list[Outcome] = []  # devices no driver could be built for
    for entry in (*config.devices, *config.device_ranges):
        devices = entry.devices()
        try:
            driver = create_asic_driver(  # the entry's firmware personality (LuxOS, stock, ...)
                pools,
                _short_confirm(entry.options, control.failsafe_confirm_seconds),
                concurrency=max(control.command_concurrency, 1),
            )
        except Exception as exc:  # contained: the other entries' devices still go to sleep
            detail = f"no driver: {_internal(exc)}"
            unreached.extend(
                Outcome(d.id, safe, OutcomeStatus.UNAVAILABLE, None, detail) for d in devices
            )
            continue
        targets.extend((device, driver) for device in devices)
    for outcome in unreached:
        _report(on_outcome, outcome)
    try:
        store: Store | None = Store.open(config.store.path)
    except Exception as exc:  # StoreError or worse: the failsafe goes on without the store
        log.error("failsafe: continues without the store: %s", exc)
        store = None
    journal = _Journal(store, wall_clock)
    first_intents = journal.begin_all([device for device, _ in targets], safe)

    async def attempt(device: Device, driver: AsicDriver, intent_id: int | None) -> Outcome:
        try:
            outcome = await driver.apply(device, safe)
        except DriverError as exc:
            outcome = Outcome(device.id, safe, OutcomeStatus.UNAVAILABLE, None, exc.message)
        except Exception as exc:  # a bug in one device's driver fails only that device
            detail = _internal(exc)
            outcome = Outcome(device.id, safe, OutcomeStatus.UNAVAILABLE, None, detail)
        journal.finish(intent_id, outcome)
        return outcome

    async def curtail(device: Device, driver: AsicDriver) -> Outcome:
        outcome = await attempt(device, driver, first_intents.get(device.id))
        for number in range(2, control.failsafe_attempts + 1):
            if outcome.status is not OutcomeStatus.UNCONFIRMED:
                break  # confirmed, refused, or unreachable / garbage: sending again won't help
            log.warning("failsafe: %s: sleep not confirmed, sending again (%d)", device.id, number)
            await pause(_RETRY_PAUSE_SECONDS)
            outcome = await attempt(device, driver, journal.begin(device, safe))
            if outcome.status is not OutcomeStatus.CONFIRMED:
                outcome = dataclasses.replace(
                    outcome, detail=f"{outcome.detail} (after {number} sleep commands)"
                )
        _report(on_outcome, outcome)
        return outcome

    try:
        async with asyncio.TaskGroup() as group:
            flusher = group.create_task(journal.flush_every(_FLUSH_SECONDS), name="failsafe.flush")
            tasks = [
                group.create_task(curtail(device, driver), name=f"failsafe[{device.id}].apply")
                for device, driver in targets
            ]
            await asyncio.gather(*tasks)
            flusher.cancel()
    finally:
        journal.flush()
        if store is not None:
            store.close()
    return FailsafeReport((*unreached, *(task.result() for task in tasks)))


_RETRY_PAUSE_SECONDS = 0.5


def _short_confirm(options: Any, seconds: float) -> Any:
    """The entry's driver options with the read-back window capped at ``seconds``."""
    current = getattr(options, "confirm_timeout_seconds", None)
    if not isinstance(current, int | float) or current <= seconds:
        return options
    return options.model_copy(update={"confirm_timeout_seconds": seconds})


def _report(on_outcome: Callable[[Outcome], None] | None, outcome: Outcome) -> None:
    if on_outcome is None:
        return
    try:
        on_outcome(outcome)
    except Exception as exc:  # a progress printer never stops the failsafe
        log.error("failsafe: progress report failed: %s", _internal(exc))


def _internal(exc: Exception) -> str:
    """One line for an exception that is not a DriverError, bounded in length."""
    text = str(exc)
    text = text[:200] + "..." if len(text) > 200 else text
    return f"internal error: {type(exc).__name__}: {text}"


class _Journal:
    """The failsafe's intents, written in few transactions.

    A 10,000-device failsafe must not wait on 20,000 synchronous commits: every
    first command's intent is written in one transaction before any is sent, the
    ends in batches.  A failing store is logged, never raised.
    """

    def __init__(self, store: Store | None, wall_clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = wall_clock
        self._ends: list[tuple[int, datetime, OutcomeStatus, str]] = []

    def begin_all(self, devices: list[Device], workload: Workload) -> dict[str, int]:
        """Record one intent per device (and sleep as its desired workload); id per device id."""
        if self._store is None or not devices:
            return {}
        at = self._clock()
        rows = [(device.id, workload, FAILSAFE_REASON) for device in devices]
        try:
            ids = self._store.begin_intents(at, rows)
            self._store.set_desired_many(rows, at)
        except Exception as exc:  # StoreError or worse: the commands are sent all the same
            log.error("failsafe: intents not recorded: %s", exc)
            return {}
        return {device.id: intent_id for device, intent_id in zip(devices, ids, strict=True)}

    def begin(self, device: Device, workload: Workload) -> int | None:
        """Record one more command's intent (a resend)."""
        if self._store is None:
            return None
        try:
            return self._store.begin_intent(
                at=self._clock(), device_id=device.id, workload=workload, reason=FAILSAFE_REASON
            )
        except Exception as exc:  # StoreError or worse: the command is sent all the same
            log.error("failsafe: %s: intent not recorded: %s", device.id, exc)
            return None

    def finish(self, intent_id: int | None, outcome: Outcome) -> None:
        """Queue how a command ended; written by the next flush."""
        if self._store is not None and intent_id is not None:
            self._ends.append((intent_id, self._clock(), outcome.status, outcome.detail))

    def flush(self) -> None:
        """Write the queued ends in one transaction."""
        ends, self._ends = self._ends, []
        if self._store is None or not ends:
            return
        try:
            self._store.finish_intents(ends)
        except Exception as exc:  # StoreError or worse: the next device is not held up
            log.error("failsafe: %d outcomes not recorded: %s", len(ends), exc)

    async def flush_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.flush()


_FLUSH_SECONDS = 1.0
