"""The Reconciler: sends only the difference between desired and observed, and confirms by reading back.

For each assignment whose workload differs from what the device reports, it
writes an intent to the Store, then asks the device's driver to apply the
workload; the driver reads the device back until it is confirmed or its
deadline passes.  Devices that could not be read are never commanded: what
the daemon has not read, it does not act on.  At most one command per device
is in flight; commands run as tasks of the reconciler's own TaskGroup so a
slow device never stalls the control loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType

from drivers.base import MinerControl
from scheduler.metrics import Metrics
from scheduler.model import Assignment, Outcome, OutcomeStatus, Plan, Snapshot
from scheduler.store import Store

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Reconciler(AbstractAsyncContextManager["Reconciler"]):
    """Turns a guarded plan into confirmed device commands."""

    def __init__(
        self,
        controls: Mapping[str, MinerControl],  # by device id
        store: Store,
        metrics: Metrics,
        *,
        concurrency: int = 32,
        wall_clock: Callable[[], datetime] = _utcnow,
        dry_run: bool = False,
    ) -> None:
        self.controls = controls
        self.store = store
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.dry_run = dry_run
        self.in_flight: dict[str, asyncio.Task[Outcome]] = {}
        self.last_outcomes: dict[str, Outcome] = {}
        self._semaphore = asyncio.Semaphore(concurrency)
        self._tasks: asyncio.TaskGroup | None = None

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
        await self._tasks.__aexit__(exc_type, exc, tb)
        self._tasks = None

    def reconcile(self, plan: Plan, snapshot: Snapshot) -> list[str]:
        """Start a command for every reachable device whose observed workload differs; return their ids."""
        if self._tasks is None:
            raise RuntimeError("Reconciler used outside 'async with'")
        started = []
        for assignment in plan.assignments:
            device_id = assignment.device_id
            observed = snapshot.current.get(device_id)
            if observed == assignment.workload or device_id in self.in_flight:
                continue
            if not snapshot.status[device_id].reachable:
                continue  # not read -> not acted on; the plan still shows the wish
            self.in_flight[device_id] = self._tasks.create_task(
                self._command(assignment, snapshot), name=f"reconciler[{device_id}].apply"
            )
            started.append(device_id)
        return started

    async def wait_idle(self) -> None:
        """Wait until no command is in flight (tests and shutdown)."""
        while self.in_flight:
            await asyncio.wait(list(self.in_flight.values()))

    async def _command(self, assignment: Assignment, snapshot: Snapshot) -> Outcome:
        device = snapshot.devices[assignment.device_id]
        try:
            intent_id = self.store.begin_intent(
                at=self.wall_clock(),
                device_id=device.id,
                workload=assignment.workload,
                reason=assignment.reason,
            )
            if self.dry_run:
                outcome = Outcome(
                    device.id, assignment.workload, OutcomeStatus.SKIPPED, None, "dry-run"
                )
            else:
                async with self._semaphore:
                    outcome = await self.controls[device.id].apply(device, assignment.workload)
            self.store.finish_intent(
                intent_id, at=self.wall_clock(), status=outcome.status.value, detail=outcome.detail
            )
            self.metrics.commands.labels(outcome=outcome.status.value).inc()
            self.last_outcomes[device.id] = outcome
            if outcome.status is not OutcomeStatus.CONFIRMED:
                log.warning(
                    "%s: %s (%s) %s: %s",
                    device.id,
                    assignment.workload,
                    assignment.reason,
                    outcome.status.value,
                    outcome.detail,
                )
            return outcome
        finally:
            self.in_flight.pop(device.id, None)
