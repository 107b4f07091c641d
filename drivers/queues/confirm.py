"""Read a queue node back until it reports the requested workload or the deadline passes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from drivers.errors import DriverError
from scheduler.core.model import Device, Outcome, OutcomeStatus, Sample, Workload


async def confirm_by_reading_back(
    device: Device,
    workload: Workload,
    *,
    collect: Callable[[Device], Awaitable[Sample]],
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    timeout_seconds: float,
    interval_seconds: float,
    describe_jobs: Callable[[Sample], str],
    tolerate_read_errors: bool = True,
) -> Outcome:
    """CONFIRMED once the node reports ``workload``; UNCONFIRMED (with what it reports) after the deadline.

    A read that fails before the deadline is retried when ``tolerate_read_errors``;
    the last failure propagates once the deadline has passed.
    """
    deadline = clock() + timeout_seconds
    while True:
        try:
            sample = await collect(device)
        except DriverError:
            if not tolerate_read_errors or clock() >= deadline:
                raise
        else:
            if sample.workload == workload:
                return Outcome(device.id, workload, OutcomeStatus.CONFIRMED, sample.workload)
            if clock() >= deadline:
                detail = f"node reports {sample.workload}"
                if sample.jobs:
                    detail += f"; {describe_jobs(sample)}"
                return Outcome(
                    device.id, workload, OutcomeStatus.UNCONFIRMED, sample.workload, detail
                )
        await sleep(interval_seconds)
