"""The ``report_days`` table: per (day, machine) sums for reports (scheduler.control.accounting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from scheduler.store.sqlite import Database

FIELDS = (
    "up_s",
    "down_s",
    "curtailed_s",
    "maintenance_s",
    "energy_wh",
    "revenue_usd",
    "cost_usd",
    "always_on_margin_usd",
    "dr_wh",
)


def add_report_days(store: Database, day: date, sums: Mapping[str, Sequence[float]]) -> None:
    """Add sums per machine to the day's rows, in one transaction."""
    columns = ", ".join(FIELDS)
    marks = ", ".join("?" for _ in FIELDS)
    update = ", ".join(f"{f} = {f} + excluded.{f}" for f in FIELDS)
    sql = (
        f"INSERT INTO report_days (day, device_id, {columns}) VALUES (?, ?, {marks})"
        f" ON CONFLICT (day, device_id) DO UPDATE SET {update}"
    )
    text = day.isoformat()
    with store._write() as db:
        db.executemany(sql, [(text, device, *values) for device, values in sums.items()])


def read_report_days(
    store: Database,
    start: date,
    end: date,
    device: str | None = None,
    *,
    limit: int = 10_000,
    offset: int = 0,
) -> list[tuple[Any, ...]]:
    """(day, machine, *sums in FIELDS order) between start and end inclusive, by day and machine."""
    sql, params = _where(f"SELECT day, device_id, {', '.join(FIELDS)}", start, end, device)
    sql += " ORDER BY day, device_id LIMIT ? OFFSET ?"
    return [tuple(row) for row in store._read(sql, (*params, limit, offset))]


def read_site_days(
    store: Database, start: date, end: date, device: str | None = None
) -> list[tuple[Any, ...]]:
    """(day, machines, *sums in FIELDS order summed over the machines) per day, oldest first."""
    sums = ", ".join(f"SUM({f})" for f in FIELDS)
    sql, params = _where(f"SELECT day, COUNT(*), {sums}", start, end, device)
    return [tuple(row) for row in store._read(sql + " GROUP BY day ORDER BY day", params)]


def _where(select: str, start: date, end: date, device: str | None) -> tuple[str, tuple[str, ...]]:
    sql = f"{select} FROM report_days WHERE day >= ? AND day <= ?"
    params: tuple[str, ...] = (start.isoformat(), end.isoformat())
    if device is not None:
        sql += " AND device_id = ?"
        params = (*params, device)
    return sql, params
