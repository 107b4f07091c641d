"""The control loop: each tick polls devices and feeds, snapshots, plans, guards and reconciles.

Polling and the poll deadline
-----------------------------
Device polls run on at most ``poll_concurrency`` worker tasks that take devices
from one queue (no task per device: at 10,000 devices waiting tasks were most
of the daemon's memory).  A tick waits for its polls, but never longer than
``poll_deadline_seconds`` for any one of them: a worker whose current poll has
run that long is *retired* -- it finishes that poll in the background and then
exits -- and a fresh worker takes its place, so the other devices' polls go on
at full concurrency.  The tick stops waiting once the queue is empty and every
poll still running is late.  Devices whose poll is still outstanding are left
out of that tick's snapshot (unreachable there: "poll still running", so they
are neither planned on a stale reading nor commanded); their poll's result
lands in ``FleetState`` when it finishes and is used by a later tick.  A device
whose last poll was late is polled on a task of its own that no tick waits for,
until one of its polls ends within the deadline again: a hung miner costs the
site one deadline, not one per tick.  A device
has at most one outstanding poll: a tick does not queue a device whose earlier
poll has not finished.  The driver's own timeout still ends a hung poll.  With
``poll_deadline_seconds=None`` a tick waits for every poll (the old behaviour).
The deadline runs on the event loop's clock, not on the injectable ``clock``.

A poll that started before the reconciler's last acknowledged command to the
same device may have read the device before the command landed: such a sample
is stamped with the time its poll started (see ``Reconciler.acknowledged``),
so the reconciler does not take it for a reading after that command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

from drivers.base import MarketFeed, ReportsSources, TelemetrySource
from drivers.errors import DriverError
from scheduler.control.guard import Guard
from scheduler.control.ingest import expire_pushed_sample
from scheduler.control.queues import QueueSource
from scheduler.control.reconciler import Reconciler
from scheduler.core.model import Assignment, Device, DeviceStatus, Plan, Snapshot
from scheduler.core.pool_health import PoolHealth
from scheduler.core.state import FleetState
from scheduler.observability.metrics import INTERNAL_ERROR_REASON, Metrics
from scheduler.policies import Policy
from scheduler.store.journal import DecisionRecord, Store

log = logging.getLogger(__name__)

_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class Decision:
    """A changed assignment, kept in memory for the live view."""

    at: datetime
    assignment: Assignment
    previous: str | None
    power_price_usd_per_mwh: float | None


class ControlLoop:
    """Owns one tick: poll -> snapshot -> policy -> guard -> decisions -> reconcile."""

    def __init__(
        self,
        *,
        state: FleetState,
        telemetry: Mapping[str, TelemetrySource],  # by device id
        feeds: Sequence[MarketFeed],
        policy: Policy,
        guard: Guard,
        reconciler: Reconciler,
        store: Store,
        metrics: Metrics,
        poll_concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queues: Sequence[QueueSource] = (),
        push_sample_max_age_seconds: float = 60.0,
        pool_recovery_seconds: float = 300.0,
        poll_deadline_seconds: float | None = None,
    ) -> None:
        self.state = state
        self.telemetry = telemetry
        self.feeds = feeds
        self.policy = policy
        self.guard = guard
        self.reconciler = reconciler
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self.plan: Plan | None = None
        self.recent: deque[Decision] = deque(maxlen=1000)
        self.ticks = 0
        self.poll_concurrency = max(1, poll_concurrency)
        self._feed_up: dict[str, bool] = {}
        self.tick_listeners: list[Callable[[int], None]] = []  # called after each tick in run()
        self.queues = queues
        self.wake = asyncio.Event()  # set by push inputs (MQTT price, DR event): tick now
        self.push_sample_max_age_seconds = push_sample_max_age_seconds
        self.pool_health = PoolHealth(
            (pool for d in state.devices.values() for pool in d.pools), pool_recovery_seconds
        )
        self.poll_deadline_seconds = poll_deadline_seconds  # None: a tick waits for every poll
        self._poll_queue: deque[Device] = deque()
        self._polling: set[str] = set()  # devices queued or being polled (one poll each)
        self._workers: dict[_PollWorker, asyncio.Task[None]] = {}
        self._active = 0  # workers not retired
        self._busy_active = 0  # workers not retired that are in the middle of a poll
        self._settled = asyncio.Event()  # queue empty and no poll running on an active worker
        self._late: set[str] = set()  # devices whose last poll ran past the deadline

    async def poll_devices(self) -> None:
        """Read every device once (bounded concurrency); failures mark the device unreachable.

        Returns when every poll has finished, or (with a poll deadline) when the
        queue is empty and each poll still running has run past the deadline;
        those go on in the background (see the module docstring).
        """
        queue = self._poll_queue
        for device in self.state.devices.values():
            if device.id not in self.telemetry:  # pushed over MQTT: only expire old samples
                expire_pushed_sample(
                    self.state, device.id, self.push_sample_max_age_seconds, self.clock()
                )
            elif device.id in self._polling:
                continue  # its earlier poll is still running
            elif device.id in self._late and self.poll_deadline_seconds is not None:
                self._polling.add(device.id)  # late last time: polled, but not waited for
                self._poll_in_background(device)
            else:
                self._polling.add(device.id)
                queue.append(device)
        self._spawn_workers()
        deadline = self.poll_deadline_seconds
        while not self._is_settled():
            self._settled.clear()
            if deadline is None:
                await self._settled.wait()
                continue
            loop = asyncio.get_running_loop()
            late_at = min(
                (w.started + deadline for w in self._workers if w.busy and not w.retired),
                default=loop.time() + deadline,
            )
            try:
                async with asyncio.timeout_at(late_at):
                    await self._settled.wait()
            except TimeoutError:
                self._retire_late(loop.time() - deadline)

    def _is_settled(self) -> bool:
        return not self._poll_queue and self._busy_active == 0

    def _spawn_workers(self) -> None:
        """Start workers until poll_concurrency are active (or one per queued device)."""
        while self._active < self.poll_concurrency and self._active < len(self._poll_queue):
            worker = _PollWorker()
            self._active += 1
            task = asyncio.create_task(self._work(worker), name="loop.poll")
            self._workers[worker] = task

    def _retire_late(self, started_before: float) -> None:
        """Retire workers whose poll started before ``started_before``; replace them."""
        for worker in list(self._workers):
            if worker.busy and not worker.retired and worker.started <= started_before:
                worker.retired = True
                self._active -= 1
                self._busy_active -= 1
                device_id = worker.device_id
                if device_id not in self._late:
                    self._late.add(device_id)
                    log.warning(
                        "%s: poll still running after %.1f s: left out of this tick",
                        device_id,
                        self.poll_deadline_seconds,
                    )
        self._spawn_workers()

    def _poll_in_background(self, device: Device) -> None:
        """Poll a device that was late last time on a task of its own, which no tick waits for."""
        worker = _PollWorker()
        worker.retired = worker.busy = True
        worker.device_id = device.id
        task = asyncio.create_task(self._late_poll(worker, device), name="loop.poll.late")
        self._workers[worker] = task

    async def _late_poll(self, worker: _PollWorker, device: Device) -> None:
        loop = asyncio.get_running_loop()
        worker.started = started = loop.time()
        try:
            await self._poll(device)
            if loop.time() - started < (self.poll_deadline_seconds or 0.0):
                self._late.discard(device.id)  # on time again: the next tick waits for it
        finally:
            worker.busy = False
            self._polling.discard(device.id)
            del self._workers[worker]

    async def _work(self, worker: _PollWorker) -> None:
        """Poll queued devices until the queue is empty or this worker is retired."""
        queue = self._poll_queue
        loop = asyncio.get_running_loop()
        try:
            while queue and not worker.retired:
                device = queue.popleft()
                worker.device_id, worker.started, worker.busy = device.id, loop.time(), True
                self._busy_active += 1
                try:
                    await self._poll(device)
                finally:
                    worker.busy = False
                    self._polling.discard(device.id)
                    if not worker.retired:  # a retired (late) worker exits after this poll
                        self._late.discard(device.id)
                        self._busy_active -= 1
        finally:
            del self._workers[worker]
            if not worker.retired:
                self._active -= 1
            if self._is_settled():
                self._settled.set()

    async def _poll(self, device: Device) -> None:
        """Poll one device into FleetState; every failure is contained here."""
        started = self.reconciler.clock()
        try:
            sample = await self.telemetry[device.id].collect(device)
            if device.id not in self.state.devices:
                return  # removed by a live reload while it was polled
            was_reachable = self.state.status[device.id].reachable
            acknowledged = self.reconciler.acknowledged.get(device.id)
            if acknowledged is not None and started <= acknowledged < sample.observed_at:
                # read while a command was acknowledged: the reading may predate it
                sample = dataclasses.replace(sample, observed_at=started)
            self.state.observe(sample)
        except DriverError as exc:
            self._poll_failed(device, exc.reason, exc.message)
            return
        except Exception as exc:  # a bug in one device's driver: contained here
            self._poll_failed(device, INTERNAL_ERROR_REASON, _internal(exc), exc)
            return
        if not was_reachable and self.ticks > 0:
            log.info("%s reachable again", device.id)

    async def aclose(self) -> None:
        """Cancel polls still running in the background (the daemon stops)."""
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poll_queue.clear()
        self._polling.clear()

    def _snapshot(self) -> Snapshot:
        """FleetState's snapshot, without the devices whose poll is still outstanding."""
        snapshot = self.state.snapshot(self.clock(), self.wall_clock())
        if not self._polling:
            return snapshot
        return _leave_out(snapshot, self._polling)

    def _poll_failed(
        self, device: Device, reason: str, message: str, bug: Exception | None = None
    ) -> None:
        """Mark a device unreachable, count the failure, log it once until it recovers.

        ``bug``: an exception that is not a DriverError; its traceback is logged
        (once), and not kept.
        """
        if device.id not in self.state.devices:
            return  # removed by a live reload while it was polled
        was_reachable = self.state.status[device.id].reachable
        self.state.mark_unreachable(device.id, message, self.clock())
        self.metrics.poll_errors.labels(reason=reason).inc()
        if was_reachable or self.ticks == 0:
            log.warning("%s unreachable: %s", device.id, message, exc_info=bug)

    async def poll_feeds(self) -> None:
        """Fetch every market feed once; a failing feed is marked down and its old values age."""

        async def fetch(feed: MarketFeed) -> None:
            try:
                readings = await feed.fetch()
                self.state.observe_market(readings)
            except DriverError as exc:
                self._feed_failed(feed, exc.message)
                return
            except Exception as exc:  # a bug in one feed: contained here
                self._feed_failed(feed, _internal(exc))
                return
            if not self._feed_up.get(feed.name, True):
                log.info("market feed %s up again", feed.name)
            self._feed_up[feed.name] = True
            self.metrics.source_up.labels(source=feed.name).set(1)
            self._source_states(feed)

        await _gather_all(fetch(feed) for feed in self.feeds)

    async def poll_queues(self) -> None:
        """Read every AI queue's demand; a failing queue is marked down and its demand forgotten."""

        async def fetch(source: QueueSource) -> None:
            label = f"queue:{source.name}"
            try:
                demands = await source.demand()
            except Exception as exc:  # DriverError, or a bug in one queue
                message = exc.message if isinstance(exc, DriverError) else _internal(exc)
                if self._feed_up.get(label, True):
                    log.warning("AI queue %s down: %s", source.name, message)
                self._feed_up[label] = False
                self.metrics.source_up.labels(source=label).set(0)
                self.state.forget_queues(source.queue_names)
                return
            if not self._feed_up.get(label, True):
                log.info("AI queue %s up again", source.name)
            self._feed_up[label] = True
            self.metrics.source_up.labels(source=label).set(1)
            self.state.forget_queues(set(source.queue_names) - set(demands))
            self.state.observe_queues(demands)

        await _gather_all(fetch(source) for source in self.queues)

    def _feed_failed(self, feed: MarketFeed, message: str) -> None:
        """Mark a feed down (its old values age out); log it once until it is up again."""
        self._source_states(feed)
        if self._feed_up.get(feed.name, True):
            log.warning("market feed %s down: %s", feed.name, message)
        self._feed_up[feed.name] = False
        self.metrics.source_up.labels(source=feed.name).set(0)

    def update_pool_health(self) -> None:
        """Fold the devices' pool reports into FleetState.pools_up and wattmux_pool_up{pool}."""
        changed = self.pool_health.update(self.state.samples, self.state.status, self.clock())
        for pool, up in changed.items():
            self.state.set_pool_up(pool, up)
            self.metrics.pool_up.labels(pool=pool).set(1 if up else 0)
            if self.ticks > 0 or not up:
                log.warning(
                    "pool %s %s", pool, "up again" if up else "down: no miner sees it alive"
                )

    def _source_states(self, feed: MarketFeed) -> None:
        """Export wattmux_source_up{source="<feed>.<upstream>"} for feeds that combine sources."""
        if isinstance(feed, ReportsSources):
            for source, up in feed.up().items():
                self.metrics.source_up.labels(source=f"{feed.name}.{source}").set(1 if up else 0)

    async def tick(self) -> Plan:
        """Run one full control cycle and return the guarded plan."""
        started = self.clock()
        await asyncio.gather(self.poll_devices(), self.poll_feeds(), self.poll_queues())
        self.update_pool_health()
        snapshot = self._snapshot()
        plan = self.guard.apply(self.policy.plan(snapshot), snapshot)
        price = snapshot.market.power_price_usd_per_mwh
        self._record_decisions(plan, price.value if price else None)
        self.reconciler.reconcile(plan, snapshot)
        self.plan = plan
        self.ticks += 1
        self.metrics.ticks.inc()
        self.metrics.tick_duration.observe(self.clock() - started)
        return plan

    def react(self) -> Plan:
        """Decide now on what FleetState already holds (a price message woke us): no poll.

        Snapshot -> policy -> guard -> reconcile, as in tick(), without reading the
        devices first; the reconciler only commands devices a poll has read.
        """
        snapshot = self._snapshot()
        plan = self.guard.apply(self.policy.plan(snapshot), snapshot)
        price = snapshot.market.power_price_usd_per_mwh
        self._record_decisions(plan, price.value if price else None)
        self.reconciler.reconcile(plan, snapshot)
        self.plan = plan
        return plan

    def _record_decisions(self, plan: Plan, power_price_usd_per_mwh: float | None) -> None:
        """Record every changed assignment (one transaction for a fleet-wide change)."""
        at = self.wall_clock()
        changed: list[DecisionRecord] = []
        for assignment in plan.assignments:
            previous = self.state.desired.get(assignment.device_id)
            if previous == assignment.workload:
                continue
            self.state.desired[assignment.device_id] = assignment.workload
            changed.append(
                DecisionRecord(
                    assignment.device_id,
                    assignment.workload,
                    assignment.reason,
                    assignment.expected_margin_usd_per_hour,
                    previous,
                )
            )
            self.metrics.decisions.labels(reason=assignment.reason).inc()
            self.recent.append(
                Decision(
                    at, assignment, str(previous) if previous else None, power_price_usd_per_mwh
                )
            )
        self.store.record_decisions(at, changed)

    async def run(
        self, tick_seconds: float, stop: asyncio.Event, ready: asyncio.Event | None = None
    ) -> None:
        """Tick every tick_seconds (measured start to start) until stop is set; ready after tick one."""
        try:
            await self._run(tick_seconds, stop, ready)
        finally:
            await self.aclose()

    async def _run(
        self, tick_seconds: float, stop: asyncio.Event, ready: asyncio.Event | None
    ) -> None:
        while not stop.is_set():
            started = self.clock()
            await self.tick()
            if ready is not None:
                ready.set()
            for listener in self.tick_listeners:
                listener(self.ticks)
            # Until the next tick: a pushed price or DR event (wake) is decided on at once
            # with react(), without polling the devices again.
            while (remaining := tick_seconds - (self.clock() - started)) > 0:
                try:
                    await asyncio.wait_for(_first_of(stop, self.wake), remaining)
                except TimeoutError:
                    break
                if stop.is_set():
                    break
                self.wake.clear()
                self.react()


class _PollWorker:
    """What one poll worker is doing (the tick retires workers stuck past the deadline)."""

    __slots__ = ("busy", "device_id", "retired", "started")

    def __init__(self) -> None:
        self.busy = False
        self.device_id = ""
        self.started = 0.0  # event loop time the current poll started
        self.retired = False


_POLL_RUNNING = DeviceStatus(reachable=False, last_error="poll still running")


def _leave_out(snapshot: Snapshot, device_ids: set[str]) -> Snapshot:
    """The snapshot with these devices unread: no sample, not reachable in it."""
    status = dict(snapshot.status)
    for device_id in device_ids:
        if device_id in status:
            status[device_id] = _POLL_RUNNING
    return dataclasses.replace(
        snapshot,
        samples=MappingProxyType(
            {d: s for d, s in snapshot.samples.items() if d not in device_ids}
        ),
        current=MappingProxyType(
            {d: w for d, w in snapshot.current.items() if d not in device_ids}
        ),
        status=MappingProxyType(status),
    )


def _internal(exc: Exception) -> str:
    """One line for an unexpected exception (a driver or parser bug), bounded in length."""
    text = str(exc)
    if len(text) > 200:
        text = text[:200] + "..."
    return (
        f"internal error: {type(exc).__name__}: {text}"
        if text
        else f"internal error: {type(exc).__name__}"
    )


async def _first_of(*events: asyncio.Event) -> None:
    """Return as soon as any of the events is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_bounded(
    work: Callable[[_Item], Coroutine[Any, Any, None]], items: Sequence[_Item], limit: int
) -> None:
    """Run ``work(item)`` for every item, at most ``limit`` at once, in order.

    ``limit`` worker tasks share one iterator, instead of one task per item: at
    10,000 devices the waiting tasks were most of the daemon's memory (their frames
    and the fragments they left in the allocator).  An error other than what
    ``work`` handles itself propagates and cancels the other workers (TaskGroup).
    """
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    async with asyncio.TaskGroup() as group:
        for index in range(min(limit, len(items))):
            group.create_task(worker(), name=f"loop.poll[{index}]")


async def _gather_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines concurrently in a TaskGroup (errors other than DriverError propagate)."""
    async with asyncio.TaskGroup() as group:
        for coroutine in coroutines:
            group.create_task(coroutine)
