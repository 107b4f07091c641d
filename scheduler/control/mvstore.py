"""M&V inputs that outlive a restart: the site meter per minute and each event's window.

``MeterRecorder`` listens to the site meter (a few float additions per
reading, no I/O) and keeps per-minute sums; as a tick listener it writes them,
and the M&V inputs of every target and DR event that changed (id, source,
window, target or reduction, response limit), to the store once a minute, and
at the daemon's stop (``flush``).  Minutes and events older than
``[store] meter_history_days`` are deleted hourly.  It gives ``MeterHistory``
its ``older`` readings, so M&V (``event_mv``) reads stored per-minute means
(of the minutes wholly inside a window) for any time before the first reading
in memory: after a restart, an event's M&V is the same at one-minute
resolution, and a days-of-history baseline uses the stored days.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.meter.base import MeterReading
from scheduler.control.grid import GridControl
from scheduler.control.mv import BaselineMethod, EventMv, measure
from scheduler.control.setpoint import Target
from scheduler.core.model import Event
from scheduler.store.meterlog import (
    StoredEvent,
    add_meter_minutes,
    delete_meter_history_before,
    mv_event,
    put_mv_events,
    read_meter_minutes,
)
from scheduler.store.sqlite import Database, StoreError

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0
RETENTION_CHECK_SECONDS = 3600.0


def _minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


class MeterRecorder:
    """Per-minute meter sums and events' M&V inputs, written to the store now and then."""

    def __init__(
        self,
        store: Database,
        grid: GridControl,
        *,
        retention_days: float = 45.0,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.grid = grid
        self.retention_days = retention_days
        self.flush_seconds = flush_seconds
        self.clock = clock
        self.minutes: dict[datetime, list[float]] = {}  # minute -> [sum W, readings] unwritten
        self._written: dict[str, StoredEvent] = {}
        self._last_flush: float | None = None
        self._last_retention: float | None = None
        if grid.meter is not None:
            grid.meter.listeners.append(self.on_reading)
        grid.history.older = self.stored
        grid.stored_event = self.event

    def on_reading(self, reading: MeterReading) -> None:
        """Add a reading to its minute's sum (the hot path: no I/O)."""
        self.add(self.grid.wall_clock(), reading.power_w)

    def add(self, at: datetime, power_w: float) -> None:
        """Add one reading at wall time ``at``."""
        sums = self.minutes.setdefault(_minute(at), [0.0, 0.0])
        sums[0] += power_w
        sums[1] += 1
        if len(self.minutes) > 24 * 60:  # the store refused writes for a day: keep the newest
            del self.minutes[min(self.minutes)]

    def __call__(self, *_args: Any) -> None:
        """Tick listener: write once every ``flush_seconds``."""
        now = self.clock()
        if self._last_flush is None:
            self._last_flush = now
        if now - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self, *, stopping: bool = False) -> None:
        """Write the unwritten minutes and changed events; delete expired rows hourly.

        ``stopping``: the daemon stops, and the target in force with it (its end is now).
        """
        self._last_flush = self.clock()
        minutes = sorted(self.minutes.items())
        events = list(self._events())
        if stopping:
            now = self.grid.wall_clock()
            events = [replace(e, end=now) if e.end is None else e for e in events]
        events = [e for e in events if self._written.get(e.id) != e]
        try:
            if minutes:
                add_meter_minutes(self.store, [(m, s, int(n)) for m, (s, n) in minutes])
                self.minutes.clear()
            if events:
                put_mv_events(self.store, events)
                for event in events:
                    self._written[event.id] = event
                while len(self._written) > 1000:
                    del self._written[next(iter(self._written))]
            if self.retention_days > 0 and (
                self._last_retention is None
                or self._last_flush - self._last_retention >= RETENTION_CHECK_SECONDS
            ):
                self._last_retention = self._last_flush
                before = self.grid.wall_clock() - timedelta(days=self.retention_days)
                delete_meter_history_before(self.store, before)
        except StoreError as exc:
            log.error("cannot write the M&V history: %s", exc.message)

    def _events(self) -> Iterable[StoredEvent]:
        ctl = self.grid.setpoint
        for target in ctl.history:
            if target.started_wall is None:
                continue
            yield StoredEvent(
                target.id,
                target.source,
                target.started_wall,
                target.ended_wall,
                target.kw,
                None,
                target.response_limit_seconds,
            )
        for event in self.grid.state.events:
            yield StoredEvent(
                event.id, "dr", event.start, event.end, event.target_kw, event.reduction_kw, None
            )

    def stored(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        """Stored per-minute means of the minutes wholly in [start, end) (empty on a store error).

        A minute that straddles a window's edge mixes readings from both sides
        (before and during an event): it is left out.
        """
        try:
            return read_meter_minutes(
                self.store, start, end - timedelta(seconds=60, microseconds=-1)
            )
        except StoreError as exc:
            log.error("cannot read the M&V history: %s", exc.message)
            return []

    def event(self, event_id: str) -> StoredEvent | None:
        """An event's stored M&V inputs."""
        try:
            return mv_event(self.store, event_id)
        except StoreError as exc:
            log.error("cannot read the M&V inputs of %s: %s", event_id, exc.message)
            return None


def event_mv(
    grid: GridControl,
    events: Iterable[Event],
    event_id: str,
    method: BaselineMethod | None,
    now: datetime,
) -> EventMv | None:
    """The M&V of a target or DR event: in memory first, then the store; None if unknown."""
    config = grid.setpoint.config
    options: dict[str, Any] = {
        "method": method or config.mv_baseline,
        "baseline_minutes": config.mv_baseline_minutes,
        "baseline_days": config.mv_baseline_days,
        "interval_seconds": config.mv_interval_seconds,
        "tolerance_pct": config.tolerance_pct,
    }
    target: Target | None = grid.find(event_id)
    if target is not None and target.started_wall is not None:
        return measure(
            grid.history,
            event_id=target.id,
            source=target.source,
            start=target.started_wall,
            end=target.ended_wall or now,
            target_kw=target.kw,
            response_limit_seconds=target.response_limit_seconds,
            **options,
        )
    event = next((e for e in events if e.id == event_id), None)
    stored = None if event is not None or grid.stored_event is None else grid.stored_event(event_id)
    if event is not None:
        stored = StoredEvent(
            event.id, "dr", event.start, event.end, event.target_kw, event.reduction_kw, None
        )
    if stored is None:
        return None
    return measure(
        grid.history,
        event_id=stored.id,
        source=stored.source,
        start=stored.start,
        end=min(stored.end, now) if stored.end is not None else now,
        target_kw=stored.target_kw,
        reduction_kw=stored.reduction_kw,
        response_limit_seconds=stored.response_limit_seconds,
        **options,
    )
