"""The ``meter_minutes`` and ``mv_events`` tables: M&V inputs that outlive a restart.

``meter_minutes``: the site meter's readings as per-minute sums and counts (the
mean is ``sum_w / samples``; a minute written twice adds up).  ``mv_events``: the
inputs of each event's M&V (id, source, window, target or reduction, the
response limit of an award deployment).  Written by scheduler.control.mvstore.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from scheduler.store.sqlite import Database, from_text, to_text


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The inputs of one event's M&V."""

    id: str
    source: str
    start: datetime
    end: datetime | None
    target_kw: float | None
    reduction_kw: float | None
    response_limit_seconds: float | None


def add_meter_minutes(store: Database, rows: Iterable[tuple[datetime, float, int]]) -> None:
    """Add (minute, sum of W, readings) to the stored minutes, in one transaction."""
    sql = (
        "INSERT INTO meter_minutes (minute, sum_w, samples) VALUES (?, ?, ?)"
        " ON CONFLICT (minute) DO UPDATE SET sum_w = sum_w + excluded.sum_w,"
        " samples = samples + excluded.samples"
    )
    with store._write() as db:
        db.executemany(sql, [(to_text(m), s, n) for m, s, n in rows if n > 0])


def read_meter_minutes(
    store: Database, start: datetime, end: datetime, *, limit: int = 100_000
) -> list[tuple[datetime, float]]:
    """(minute, mean W) with start <= minute < end, oldest first (at most ``limit``)."""
    rows = store._read(
        "SELECT minute, sum_w / samples FROM meter_minutes WHERE minute >= ? AND minute < ?"
        " ORDER BY minute LIMIT ?",
        (to_text(start), to_text(end), limit),
    )
    return [(from_text(row[0]), float(row[1])) for row in rows]


def put_mv_events(store: Database, events: Iterable[StoredEvent]) -> None:
    """Insert or replace events' M&V inputs, in one transaction."""
    sql = (
        "INSERT OR REPLACE INTO mv_events (id, source, start, end, target_kw, reduction_kw,"
        " response_limit_seconds) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    rows = [
        (
            e.id,
            e.source,
            to_text(e.start),
            None if e.end is None else to_text(e.end),
            e.target_kw,
            e.reduction_kw,
            e.response_limit_seconds,
        )
        for e in events
    ]
    with store._write() as db:
        db.executemany(sql, rows)


def mv_event(store: Database, event_id: str) -> StoredEvent | None:
    """One event's stored M&V inputs."""
    rows = store._read(
        "SELECT id, source, start, end, target_kw, reduction_kw, response_limit_seconds"
        " FROM mv_events WHERE id = ?",
        (event_id,),
    )
    if not rows:
        return None
    row = rows[0]
    return StoredEvent(
        row[0],
        row[1],
        from_text(row[2]),
        None if row[3] is None else from_text(row[3]),
        row[4],
        row[5],
        row[6],
    )


def delete_meter_history_before(store: Database, before: datetime) -> int:
    """Delete minutes and events that started before ``before``; the rows deleted."""
    with store._write() as db:
        minutes = db.execute("DELETE FROM meter_minutes WHERE minute < ?", (to_text(before),))
        events = db.execute("DELETE FROM mv_events WHERE start < ?", (to_text(before),))
        return int(minutes.rowcount) + int(events.rowcount)
