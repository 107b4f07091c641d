"""The Reconciler: sends only the difference between desired and observed, and verifies it.

For each assignment whose workload differs from what the device reports, it
writes an intent to the Store, then asks the device's driver to apply the
workload; the driver reads the device back until it is confirmed or its
deadline passes.  Nothing is assumed to have obeyed:

    confirmed     the drift record (if any) is cleared
    unconfirmed   the device answers reads but does not show the workload: it is
                  recorded as drifted (FleetState.drift, wattmux_devices_drifted)
                  and retried up to ``max_attempts`` times with capped, jittered
                  backoff; after that it waits ``retry_at`` before the next tick
                  may try again
    unavailable   the device could not be read back: it is marked unreachable in
                  FleetState (so it is not commanded until a poll reads it again)
                  and recorded as drifted
    rejected      the device said no: recorded as drifted, retried only after the
                  backoff cap (retrying at once would get the same answer)

Devices that could not be read are never commanded.  At most one command per
device is in flight; commands run as tasks of the reconciler's own TaskGroup,
at most ``concurrency`` at once, so a slow device never stalls the control loop
and 10,000 devices fan out without opening 10,000 sockets at once.  For drivers
that send and confirm as two steps (``SendsThenConfirms``) a send and a
read-back each take one of those slots, and waiting sends go first: a
fleet-wide curtail reaches every device before the read-backs start.
``last_acknowledged_at`` is when (on ``clock``) the most recent command was
accepted by its device.

No command twice: a device is not commanded while its previous command (its
open intent) is in flight, nor on a reading older than its last acknowledged
command.  ``acknowledged`` holds, per device, when (on ``clock``) its last
command was accepted -- the send of a two-step driver, the end of a one-step
``apply`` that reached the device (confirmed or unconfirmed) -- and a device
whose sample was observed at or before that time waits for a newer reading: a
poll that read it before the command landed still shows the old workload.
Samples' ``observed_at`` must be on the same clock (the daemon passes one clock
to drivers, loop and reconciler).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import cast

from drivers.backoff import Backoff
from drivers.base import MinerControl, SendsThenConfirms
from drivers.errors import DriverError, Rejected
from drivers.slots import Slots
from scheduler.core.model import (
    Assignment,
    Device,
    Outcome,
    OutcomeStatus,
    Plan,
    Snapshot,
    Workload,
)
from scheduler.core.state import Drift, FleetState
from scheduler.observability.metrics import INTERNAL_ERROR_REASON, Metrics
from scheduler.store.journal import Store

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler(AbstractAsyncContextManager["Reconciler"]):
    """Turns a guarded plan into verified device commands, retrying what does not confirm."""

    def __init__(
        self,
        controls: Mapping[str, MinerControl],  # by device id
        store: Store,
        metrics: Metrics,
        *,
        concurrency: int = 32,
        wall_clock: Callable[[], datetime] = _utcnow,
        state: FleetState | None = None,
        max_attempts: int = 3,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.controls = controls
        self.store = store
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.state = state
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff or Backoff(base_seconds=1.0, cap_seconds=30.0)
        self.clock = clock
        self.sleep = sleep
        self.in_flight: dict[str, asyncio.Task[Outcome]] = {}
        self.last_outcomes: dict[str, Outcome] = {}
        self.drift: dict[str, Drift] = state.drift if state is not None else {}
        self._wanted: dict[str, Workload] = {}
        self.flush_seconds = 0.05
        self._finished: list[tuple[int, datetime, Outcome]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._slots = Slots(max(1, concurrency))  # sends ahead of read-backs
        self._two_step: dict[type, bool] = {}  # driver class -> implements SendsThenConfirms
        self.last_acknowledged_at: float | None = None
        self.acknowledged: dict[str, float] = {}  # device id -> its last command's acceptance
        self._tasks: asyncio.TaskGroup | None = None
        self._faulty: set[str] = set()  # devices whose driver raised a bug (logged once)

    async def __aenter__(self) -> Reconciler:
        """Open the task group that owns command tasks."""
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Cancel commands still in flight (their intents stay open for recovery) and close."""
        for task in self.in_flight.values():
            task.cancel()
        assert self._tasks is not None
        try:
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            self._tasks = None
            self.flush()

    def reconcile(self, plan: Plan, snapshot: Snapshot) -> list[str]:
        """Start a command for every reachable device whose observed workload differs; return their ids."""
        if self._tasks is None:
            raise RuntimeError("Reconciler used outside 'async with'")
        started: list[Assignment] = []
        for assignment in plan.assignments:
            device_id = assignment.device_id
            self._wanted[device_id] = assignment.workload
            observed = snapshot.current.get(device_id)
            if observed == assignment.workload:
                if device_id in self.drift and device_id not in self.in_flight:
                    del self.drift[device_id]  # a poll saw it there: no longer drifted
                continue
            if device_id in self.in_flight:
                continue
            if not snapshot.status[device_id].reachable:
                continue  # not read -> not acted on; the plan still shows the wish
            acknowledged = self.acknowledged.get(device_id)
            if acknowledged is not None:
                sample = snapshot.samples.get(device_id)
                if sample is None or sample.observed_at <= acknowledged:
                    continue  # read before its last command was accepted: wait for a new reading
            drift = self.drift.get(device_id)
            if (
                drift is not None
                and drift.requested == assignment.workload
                and drift.retry_at is not None
                and snapshot.now < drift.retry_at
            ):
                continue  # backing off
            started.append(assignment)
        intents = self.store.begin_intents(  # every intent on disk, in one transaction, first
            self.wall_clock(), [(a.device_id, a.workload, a.reason) for a in started]
        )
        for assignment, intent_id in zip(started, intents, strict=True):
            device_id = assignment.device_id
            self.in_flight[device_id] = self._tasks.create_task(
                self._command(assignment, snapshot.devices[device_id], intent_id),
                name=f"reconciler[{device_id}].apply",
            )
        return [assignment.device_id for assignment in started]

    def _begin(self, assignment: Assignment) -> int:
        return self.store.begin_intent(
            at=self.wall_clock(),
            device_id=assignment.device_id,
            workload=assignment.workload,
            reason=assignment.reason,
        )

    def _finish(self, intent_id: int, outcome: Outcome) -> None:
        """Queue an intent's end; queued ends are written together a moment later."""
        self._finished.append((intent_id, self.wall_clock(), outcome))
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.flush_seconds, self.flush)

    def flush(self) -> None:
        """Write every queued intent end in one transaction (an unwritten end stays open)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        finished, self._finished = self._finished, []
        if not finished:
            return
        self.store.finish_intents(
            [(intent_id, at, outcome.status, outcome.detail) for intent_id, at, outcome in finished]
        )

    async def wait_idle(self) -> None:
        """Wait until no command is in flight (tests and shutdown)."""
        while self.in_flight:
            await asyncio.wait(list(self.in_flight.values()))
        self.flush()

    async def _attempt(self, assignment: Assignment, device: Device, intent_id: int) -> Outcome:
        """Apply once through the driver (its intent already written); record the outcome."""
        outcome = await self._contained(device, assignment.workload)
        self._finish(intent_id, outcome)
        self.metrics.commands.labels(outcome=outcome.status.value).inc()
        self.last_outcomes[device.id] = outcome
        return outcome

    async def _contained(self, device: Device, workload: Workload) -> Outcome:
        """The driver's apply, with anything it raises turned into this device's outcome.

        Drivers report failure as an Outcome; a DriverError that escapes one
        anyway, or any other exception (a bug in a parser), is contained here:
        it never reaches the task group, it fails only this device's command
        (unavailable: the device is not commanded again until a poll reads it),
        and a bug is counted in wattmux_poll_errors_total{reason="internal"} and
        logged with its traceback once until the device's next confirmed command.
        """
        try:
            outcome = await self._apply(self.controls[device.id], device, workload)
        except DriverError as exc:
            status = (
                OutcomeStatus.REJECTED if isinstance(exc, Rejected) else OutcomeStatus.UNAVAILABLE
            )
            return Outcome(device.id, workload, status, None, exc.message)
        except Exception as exc:  # a bug in one device's driver: contained here
            self.metrics.poll_errors.labels(reason=INTERNAL_ERROR_REASON).inc()
            if device.id not in self._faulty:
                self._faulty.add(device.id)
                log.error("%s: %s failed: internal error", device.id, workload, exc_info=exc)
            return Outcome(
                device.id,
                workload,
                OutcomeStatus.UNAVAILABLE,
                None,
                f"internal error: {type(exc).__name__}",
            )
        if outcome.status is OutcomeStatus.CONFIRMED:
            self._faulty.discard(device.id)
        return outcome

    async def _apply(self, control: MinerControl, device: Device, workload: Workload) -> Outcome:
        """The driver's apply; a two-step driver's read-back waits for every waiting send."""
        two_step = self._two_step.get(type(control))
        if two_step is None:
            two_step = self._two_step[type(control)] = isinstance(control, SendsThenConfirms)
        await self._slots.acquire(ahead=True)
        try:
            if not two_step:
                outcome = await control.apply(device, workload)
                if outcome.status in (OutcomeStatus.CONFIRMED, OutcomeStatus.UNCONFIRMED):
                    self.acknowledged[device.id] = self.clock()
                return outcome
            stepped = cast(SendsThenConfirms, control)  # checked once per class above
            sent = await stepped.send(device, workload)
        finally:
            self._slots.release()
        if sent is not None:
            return sent
        self.last_acknowledged_at = self.acknowledged[device.id] = self.clock()
        await self._slots.acquire(ahead=False)
        try:
            return await stepped.confirm(device, workload)
        finally:
            self._slots.release()

    async def _command(self, assignment: Assignment, device: Device, intent_id: int) -> Outcome:
        """Apply with verify-after-write; retry unconfirmed commands with backoff."""
        try:
            attempt = 0
            previous = self.drift.get(device.id)
            earlier = (
                previous.attempts if previous and previous.requested == assignment.workload else 0
            )
            while True:
                attempt += 1
                if attempt > 1:
                    intent_id = self._begin(assignment)
                outcome = await self._attempt(assignment, device, intent_id)
                if outcome.status in (OutcomeStatus.CONFIRMED, OutcomeStatus.SKIPPED):
                    if self.drift.pop(device.id, None) is not None:
                        log.info("%s: %s confirmed after drift", device.id, assignment.workload)
                    return outcome
                retry = (
                    outcome.status is OutcomeStatus.UNCONFIRMED
                    and attempt < self.max_attempts
                    and self._wanted.get(device.id) == assignment.workload
                )
                self._record_drift(assignment, device, outcome, earlier + attempt, retry)
                if not retry:
                    return outcome
                self.metrics.command_retries.inc()
                await self.sleep(self.backoff.delay_seconds(earlier + attempt))
                if self._wanted.get(device.id) != assignment.workload:
                    return outcome  # the plan moved on; the next tick sends the new wish
        finally:
            self.in_flight.pop(device.id, None)

    def _record_drift(
        self,
        assignment: Assignment,
        device: Device,
        outcome: Outcome,
        attempts: int,
        retrying: bool,
    ) -> None:
        now = self.clock()
        previous = self.drift.get(device.id)
        since = previous.since if previous and previous.requested == assignment.workload else now
        retry_at = None if retrying else now + self.backoff.ceiling_seconds(attempts)
        self.drift[device.id] = Drift(
            requested=assignment.workload,
            observed=outcome.observed,
            attempts=attempts,
            since=since,
            detail=f"{outcome.status.value}: {outcome.detail}",
            retry_at=retry_at,
        )
        if outcome.status is OutcomeStatus.UNAVAILABLE and self.state is not None:
            self.state.mark_unreachable(device.id, outcome.detail, now)
        if previous is None or not retrying:
            log.warning(
                "%s: %s (%s) %s after %d attempt(s): %s",
                device.id,
                assignment.workload,
                assignment.reason,
                outcome.status.value,
                attempts,
                outcome.detail,
            )
