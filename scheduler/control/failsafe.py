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
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

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
) -> FailsafeReport:
    """Command every configured device to sleep; return every outcome."""
    pools = pools_of(config)
    safe = Workload.sleep()
    targets: list[tuple[Device, AsicDriver]] = []
    unreached: list[Outcome] = []  # devices no driver could be built for
    for entry in (*config.devices, *config.device_ranges):
        devices = entry.devices()
        try:
            driver = create_asic_driver(  # the entry's firmware personality (LuxOS, stock, ...)
                pools, entry.options, concurrency=max(config.control.command_concurrency, 1)
            )
        except Exception as exc:  # contained: the other entries' devices still go to sleep
            detail = f"no driver: {_internal(exc)}"
            unreached.extend(
                Outcome(d.id, safe, OutcomeStatus.UNAVAILABLE, None, detail) for d in devices
            )
            continue
        targets.extend((device, driver) for device in devices)
    try:
        store: Store | None = Store.open(config.store.path)
    except Exception as exc:  # StoreError or worse: the failsafe goes on without the store
        log.error("failsafe continues without the store: %s", exc)
        store = None
    semaphore = asyncio.Semaphore(max(config.control.command_concurrency, 1))

    async def curtail(device: Device, driver: AsicDriver) -> Outcome:
        intent_id = _begin(store, device, safe, wall_clock())
        async with semaphore:
            try:
                outcome = await driver.apply(device, safe)
            except DriverError as exc:
                outcome = Outcome(device.id, safe, OutcomeStatus.UNAVAILABLE, None, exc.message)
            except Exception as exc:  # a bug in one device's driver fails only that device
                detail = _internal(exc)
                outcome = Outcome(device.id, safe, OutcomeStatus.UNAVAILABLE, None, detail)
        _finish(store, intent_id, outcome, wall_clock())
        return outcome

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(curtail(device, driver), name=f"failsafe[{device.id}].apply")
                for device, driver in targets
            ]
    finally:
        if store is not None:
            store.close()
    return FailsafeReport((*unreached, *(task.result() for task in tasks)))


def _internal(exc: Exception) -> str:
    """One line for an exception that is not a DriverError, bounded in length."""
    text = str(exc)
    text = text[:200] + "..." if len(text) > 200 else text
    return f"internal error: {type(exc).__name__}: {text}"


def _begin(store: Store | None, device: Device, workload: Workload, at: datetime) -> int | None:
    if store is None:
        return None
    try:
        intent_id = store.begin_intent(
            at=at, device_id=device.id, workload=workload, reason=FAILSAFE_REASON
        )
        store.set_desired(device.id, workload, FAILSAFE_REASON, at)
    except Exception as exc:  # StoreError or worse: the command is sent all the same
        log.error("failsafe: %s: intent not recorded: %s", device.id, exc)
        return None
    return intent_id


def _finish(store: Store | None, intent_id: int | None, outcome: Outcome, at: datetime) -> None:
    if store is None or intent_id is None:
        return
    try:
        store.finish_intent(intent_id, at=at, status=outcome.status, detail=outcome.detail)
    except Exception as exc:  # StoreError or worse: the next device is not held up
        log.error("failsafe: %s: outcome not recorded: %s", outcome.device_id, exc)
