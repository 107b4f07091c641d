"""Maintenance actions on miners: reboot, pool set, power profile, locate, each verified.

A job acts on its devices in batches of ``batch_size``: every device of a batch
is sent the action, then its state is read back until it shows the action took
(``verify_timeout_seconds``); the next batch starts ``batch_interval_seconds``
after the last device of a batch was verified.  When a batch has a device that
failed or could not be verified, the rest are skipped (``stop_on_failure``).

How each action is verified (read back, never trusted on the word of the firmware):

    reboot         the uptime the firmware reports (``Sample.health.uptime_s``) starts
                   again: below what it was before and no more than the time since the
                   command (a firmware that reports no uptime is refused: no verify)
    pool           ``observe()`` shows the miner mining on the pool
    power-profile  ``observe()`` shows the power level (within ``LEVEL_TOLERANCE``)
    locate         ``locate_on()`` reads the LED as asked

An action the device's driver lacks is ``unsupported`` (named), one outside what
the device may do (a pool not in its list, a power level outside the model's
power-target range in the catalog) is ``refused``; neither is sent.  Each device
ends with one outcome; jobs are kept in memory (the last ``MAX_JOBS``).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers.errors import DriverError, Rejected
from drivers.maintenance import Locatable, Rebootable
from scheduler.core.hardware import lookup
from scheduler.core.model import Device, Pool, WorkloadKind

log = logging.getLogger(__name__)

MAX_JOBS = 32
MAX_DEVICES_PER_JOB = 10_000
LEVEL_TOLERANCE = 0.05
REBOOT_SLACK_SECONDS = 5.0  # uptime may count from a moment before the command was answered


class Action(enum.StrEnum):
    """What a maintenance job does to each of its devices."""

    REBOOT = "reboot"
    POOL = "pool"
    POWER_PROFILE = "power-profile"
    LOCATE = "locate"


class ActionStatus(enum.StrEnum):
    """How one device's action ended."""

    CONFIRMED = "confirmed"  # sent and read back
    UNCONFIRMED = "unconfirmed"  # sent, not seen within the verify timeout
    FAILED = "failed"  # the command could not be sent
    REFUSED = "refused"  # not allowed for this device, or the firmware said no
    UNSUPPORTED = "unsupported"  # the device's firmware driver has no such action
    SKIPPED = "skipped"  # an earlier batch failed: not tried
    PENDING = "pending"


DONE_WELL = frozenset({ActionStatus.CONFIRMED})
BATCH_FAILURES = frozenset({ActionStatus.UNCONFIRMED, ActionStatus.FAILED})


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """One maintenance job as asked."""

    action: Action
    devices: tuple[str, ...]
    pool: str | None = None  # pool: a configured pool name the devices list
    power_level: float | None = None  # power-profile: share of nominal power
    locate: bool = True  # locate: LED on (True) or off
    batch_size: int = 10
    batch_interval_seconds: float = 0.0
    verify_timeout_seconds: float = 120.0
    stop_on_failure: bool = True


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    """One device's end: its status, why, and the batch it was in (1-based)."""

    device_id: str
    status: ActionStatus
    detail: str = ""
    batch: int = 0


@dataclass
class ActionJob:
    """A running or finished job and its per-device outcomes."""

    id: int
    request: ActionRequest
    actor: str
    outcomes: dict[str, DeviceOutcome] = field(default_factory=dict)
    batches: int = 0
    batches_done: int = 0
    done: bool = False
    on_done: Callable[[ActionJob], None] | None = None  # e.g. the audit row's result

    def counts(self) -> dict[str, int]:
        """Outcome status -> number of devices."""
        found: dict[str, int] = {}
        for outcome in self.outcomes.values():
            found[outcome.status.value] = found.get(outcome.status.value, 0) + 1
        return found

    def summary(self) -> str:
        """``reboot: 3 confirmed, 1 unsupported`` (the audit row's result)."""
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts().items()))
        return f"{self.request.action.value}: {counts or 'nothing'}"


class MaintenanceError(ValueError):
    """A request that cannot start (unknown devices, missing arguments); one line."""

    def __init__(self, message: str, field: str = "devices") -> None:
        super().__init__(message)
        self.field = field  # the request field at fault


class MaintenanceRunner:
    """Starts, runs and keeps maintenance jobs against the daemon's drivers."""

    def __init__(
        self,
        devices: Mapping[str, Device],
        drivers: Mapping[str, Any],
        pools: Mapping[str, Pool],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        verify_interval_seconds: float = 2.0,
        on_done: Callable[[ActionJob], None] | None = None,
    ) -> None:
        self.devices = devices
        self.drivers = drivers
        self.pools = pools
        self.clock = clock
        self.sleep = sleep
        self.verify_interval_seconds = verify_interval_seconds
        self.on_done = on_done
        self.jobs: OrderedDict[int, ActionJob] = OrderedDict()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[ActionJob]] = set()

    # ---- requests --------------------------------------------------------------------------

    def check(self, request: ActionRequest) -> None:
        """Raise MaintenanceError naming what is wrong with ``request``."""
        if not request.devices:
            raise MaintenanceError("no devices given")
        if len(request.devices) > MAX_DEVICES_PER_JOB:
            raise MaintenanceError(f"at most {MAX_DEVICES_PER_JOB} devices per job")
        unknown = [d for d in request.devices if d not in self.devices]
        if unknown:
            shown = ", ".join(repr(d) for d in unknown[:5])
            raise MaintenanceError(
                f"unknown device(s): {shown}" + (" ..." if len(unknown) > 5 else "")
            )
        if len(set(request.devices)) != len(request.devices):
            raise MaintenanceError("a device is listed twice")
        if request.action is Action.POOL and request.pool not in self.pools:
            raise MaintenanceError(
                f"pool: give a configured pool name ({', '.join(sorted(self.pools))})", "pool"
            )
        if request.action is Action.POWER_PROFILE and not (
            request.power_level is not None and 0.0 < request.power_level <= 1.0
        ):
            raise MaintenanceError(
                "power-profile: give power_level in (0, 1] (share of nominal)", "power_level"
            )
        if request.batch_size < 1:
            raise MaintenanceError("batch_size must be at least 1", "batch_size")

    def start(
        self,
        request: ActionRequest,
        actor: str,
        on_done: Callable[[ActionJob], None] | None = None,
    ) -> ActionJob:
        """Check and start a job in the background; the job object fills in as it runs."""
        job = self._new_job(request, actor)
        job.on_done = on_done
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"maintenance[{job.id}]")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def run(self, request: ActionRequest, actor: str) -> ActionJob:
        """Check and run a job to its end (the CLI's and tests' way)."""
        return await self._run(self._new_job(request, actor))

    def job(self, job_id: int) -> ActionJob | None:
        """A kept job by id."""
        return self.jobs.get(job_id)

    async def close(self) -> None:
        """Cancel the jobs still running (the daemon stops)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _new_job(self, request: ActionRequest, actor: str) -> ActionJob:
        self.check(request)
        job = ActionJob(next(self._ids), request, actor)
        job.outcomes = {d: DeviceOutcome(d, ActionStatus.PENDING) for d in request.devices}
        job.batches = -(-len(request.devices) // request.batch_size)
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_JOBS:
            oldest = next(iter(self.jobs))
            if not self.jobs[oldest].done:
                break
            self.jobs.pop(oldest)
        log.info(
            "maintenance job %d: %s of %d devices by %s",
            job.id,
            request.action.value,
            len(request.devices),
            actor,
        )
        return job

    # ---- running ---------------------------------------------------------------------------

    async def _run(self, job: ActionJob) -> ActionJob:
        request = job.request
        ids = list(request.devices)
        try:
            for number, start in enumerate(range(0, len(ids), request.batch_size), start=1):
                batch = ids[start : start + request.batch_size]
                outcomes = await asyncio.gather(*(self._one(job, d, number) for d in batch))
                for outcome in outcomes:
                    job.outcomes[outcome.device_id] = outcome
                    log.info(
                        "maintenance job %d: %s %s: %s",
                        job.id,
                        outcome.device_id,
                        outcome.status.value,
                        outcome.detail,
                    )
                job.batches_done = number
                rest = ids[start + request.batch_size :]
                failed = [o.device_id for o in outcomes if o.status in BATCH_FAILURES]
                if failed and request.stop_on_failure and rest:
                    reason = f"batch {number} had {len(failed)} device(s) fail: stopped"
                    for device_id in rest:
                        job.outcomes[device_id] = DeviceOutcome(
                            device_id, ActionStatus.SKIPPED, reason
                        )
                    break
                if rest and request.batch_interval_seconds > 0:
                    await self.sleep(request.batch_interval_seconds)
        finally:
            job.done = True
            log.info("maintenance job %d ended: %s", job.id, job.summary())
            for callback in (job.on_done, self.on_done):
                if callback is not None:
                    callback(job)
        return job

    async def _one(self, job: ActionJob, device_id: str, batch: int) -> DeviceOutcome:
        device = self.devices[device_id]
        driver = self.drivers.get(device_id)
        try:
            status, detail = await self._act(job.request, device, driver)
        except Rejected as exc:
            status, detail = ActionStatus.REFUSED, f"the firmware refused: {exc.message}"
        except DriverError as exc:
            status, detail = ActionStatus.FAILED, f"{exc.reason}: {exc.message}"
        return DeviceOutcome(device_id, status, detail, batch)

    async def _act(
        self, request: ActionRequest, device: Device, driver: Any
    ) -> tuple[ActionStatus, str]:
        action = request.action
        unsupported = self._unsupported(action, device, driver)
        if unsupported is not None:
            return ActionStatus.UNSUPPORTED, unsupported
        if action is Action.REBOOT:
            return await self._reboot(request, device, driver)
        if action is Action.LOCATE:
            await driver.set_locate(device, request.locate)
            want = "on" if request.locate else "off"

            async def locate_read() -> tuple[bool, str]:
                on = bool(await driver.locate_on(device))
                return on == request.locate, f"locate LED {'on' if on else 'off'}"

            return await self._verify(request, locate_read, f"locate LED {want}")
        if action is Action.POOL:
            assert request.pool is not None
            if request.pool not in device.pools:
                return ActionStatus.REFUSED, (
                    f"pool {request.pool!r} is not one of the device's pools "
                    f"({', '.join(device.pools)})"
                )
            await driver.switch_pool(device, self.pools[request.pool].url)

            async def pool_read() -> tuple[bool, str]:
                observed = await driver.observe(device)
                if observed.kind is not WorkloadKind.MINE:
                    return False, f"observed {observed}: the active pool shows while it mines"
                return observed.pool == request.pool, f"observed {observed}"

            return await self._verify(request, pool_read, f"mining on {request.pool}")
        assert request.power_level is not None
        level = request.power_level
        refusal = power_refusal(device, level)
        if refusal is not None:
            return ActionStatus.REFUSED, refusal
        await driver.set_power_level(device, level)

        async def level_read() -> tuple[bool, str]:
            observed = await driver.observe(device)
            ok = (
                observed.kind is WorkloadKind.MINE
                and abs(observed.power_level - level) <= LEVEL_TOLERANCE
            )
            return ok, f"observed {observed}"

        return await self._verify(request, level_read, f"power level {level:g}")

    def _unsupported(self, action: Action, device: Device, driver: Any) -> str | None:
        name = f"the {device.driver} driver"
        if driver is None:
            return f"{name} is not wired for maintenance here"
        if action is Action.REBOOT and not isinstance(driver, Rebootable):
            return f"{name} has no reboot wattmux can verify"
        if action is Action.LOCATE and not isinstance(driver, Locatable):
            return f"{name} has no locate LED it can read back"
        if action is Action.POOL and not hasattr(driver, "switch_pool"):
            return f"{name} cannot set pools"
        if action is Action.POWER_PROFILE and not hasattr(driver, "set_power_level"):
            return f"{name} has no power profiles (stock firmware: sleep or full power)"
        return None

    async def _reboot(
        self, request: ActionRequest, device: Device, driver: Any
    ) -> tuple[ActionStatus, str]:
        before = await driver.collect(device)
        uptime = before.health.uptime_s if before.health is not None else None
        if uptime is None:
            return (
                ActionStatus.REFUSED,
                "the firmware reports no uptime: a reboot is not verifiable",
            )
        await driver.reboot(device)
        sent = self.clock()

        async def uptime_read() -> tuple[bool, str]:
            sample = await driver.collect(device)
            now_up = sample.health.uptime_s if sample.health is not None else None
            if now_up is None:
                return False, "no uptime reported"
            since = self.clock() - sent + REBOOT_SLACK_SECONDS
            return now_up < uptime and now_up <= since, f"uptime {now_up} s (was {uptime} s)"

        return await self._verify(request, uptime_read, "uptime started again")

    async def _verify(
        self,
        request: ActionRequest,
        read: Callable[[], Awaitable[tuple[bool, str]]],
        wanted: str,
    ) -> tuple[ActionStatus, str]:
        """Read back until ``read`` says done or the verify timeout passes."""
        deadline = self.clock() + request.verify_timeout_seconds
        last = "not read back"
        while True:
            try:
                done, last = await read()
            except DriverError as exc:  # rebooting or busy: try again
                done, last = False, f"{exc.reason}: {exc.message}"
            if done:
                return ActionStatus.CONFIRMED, last
            if self.clock() >= deadline:
                return ActionStatus.UNCONFIRMED, f"wanted {wanted}; last read: {last}"
            await self.sleep(self.verify_interval_seconds)


def power_refusal(device: Device, level: float) -> str | None:
    """Why ``level`` is outside the model's power-target range (catalog), or None."""
    facts = lookup(device.model)
    if facts is None or not facts.power_target_max_w:
        return None
    watts = level * device.nominal_power_w
    low, high = facts.power_target_min_w, facts.power_target_max_w
    if not low - 1.0 <= watts <= high + 1.0:
        return (
            f"power level {level:g} is {watts:.0f} W; {facts.name} power targets run "
            f"{low:.0f}..{high:.0f} W (catalog)"
        )
    return None


def outcome_rows(job: ActionJob) -> Sequence[DeviceOutcome]:
    """The job's outcomes in request order."""
    return [job.outcomes[d] for d in job.request.devices]
