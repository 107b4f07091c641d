"""Per-day, per-machine accounting for reports: uptime, energy, revenue, cost, gain, DR delivered.

``Accountant`` is a tick listener: after each tick it adds the tick's share to
in-memory sums per machine (a few float additions per machine, no allocation,
no I/O) and writes them to the store's ``report_days`` table once a minute, at
a day change and when a report is asked for.  ``bench/bench_reports.py``
measures the cost per tick.

Per machine and tick of ``dt`` seconds (the sample of the tick):

- time: ``up`` (read, running), ``curtailed`` (read, asleep by decision),
  ``down`` (not read), ``maintenance`` (in a maintenance window, whatever it
  does); uptime = up / (up + down), so curtailment and maintenance are excluded;
- energy: the reported power x dt; cost: energy x the power price in force;
- revenue: the reported hash rate x the hashprice (net of pool fee) x dt;
- always-on margin: what the machine would have earned mining at its nominal
  hash rate and power the whole time (not counted in maintenance, where it
  would not have run either); gain over always-on = margin - always-on margin;
- DR delivered: during a demand-response event or an operator curtail, the
  power shed below nominal (nominal - reported) x dt.

The state is sampled every ``interval_seconds`` (10 s; every tick when ticks
are slower), so most ticks cost one subtraction.  A machine that was not read earns and costs nothing in the sums (its power is
unknown).  AI revenue of GPU nodes is not counted (only mining revenue).
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.core.model import TERA
from scheduler.core.state import FleetState
from scheduler.observability.metrics import hashprice_from_market
from scheduler.store.reports import FIELDS, add_report_days, read_report_days, read_site_days
from scheduler.store.sqlite import Database, StoreError

log = logging.getLogger(__name__)

FLUSH_SECONDS = 60.0
INTERVAL_SECONDS = 10.0  # the state is sampled this often (every tick when ticks are slower)
MAX_TICK_GAP_SECONDS = 300.0  # a longer gap (a stall, a suspended host) counts this much at most
UP, DOWN, CURTAILED, MAINTENANCE, ENERGY_WH, REVENUE, COST, ALWAYS_ON, DR_WH = range(9)
assert len(FIELDS) == 9


class Accountant:
    """Sums per (day, machine) in memory, written to the store now and then."""

    def __init__(
        self,
        state: FleetState,
        store: Database | None,
        *,
        timezone: str = "UTC",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        maintenance: Callable[[datetime], frozenset[str]] | None = None,
        curtailed: Callable[[datetime], bool] | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        interval_seconds: float = INTERVAL_SECONDS,
    ) -> None:
        self.state = state
        self.store = store
        self.zone = ZoneInfo(timezone)
        self.clock = clock
        self.wall_clock = wall_clock
        self.maintenance = maintenance
        self.curtailed = curtailed
        self.flush_seconds = flush_seconds
        self.interval_seconds = interval_seconds
        self.sums: dict[str, list[float]] = {}
        self.day: date | None = None
        self._last: float | None = None
        self._last_flush = clock()

    def __call__(self, _tick: int) -> None:
        """Add the time since the last tick (a tick listener)."""
        now = self.clock()
        last = self._last
        if last is None:
            self._last = now
            return
        if now - last < self.interval_seconds:
            return  # most ticks: one subtraction
        self._last = now
        dt = min(now - last, MAX_TICK_GAP_SECONDS)
        wall = self.wall_clock()
        day = wall.astimezone(self.zone).date()
        if day != self.day:
            self.flush()
            self.day = day
        self.add(dt, wall)
        if now - self._last_flush >= self.flush_seconds:
            self.flush()

    def add(self, dt: float, wall: datetime) -> None:
        """Add dt seconds of the current state to the sums (the hot part: keep it lean)."""
        state = self.state
        market = state.market
        price = market.power_price_usd_per_mwh
        cost_per_ws = 0.0 if price is None else price.value / 3.6e9  # USD per W for one second
        hashprice = hashprice_from_market(market, state.pool_fee)
        revenue_per_hs = 0.0 if hashprice is None else hashprice / TERA / 86400.0
        held = self.maintenance(wall) if self.maintenance is not None else frozenset()
        dr = any(e.start <= wall < e.end for e in state.events) or (
            self.curtailed is not None and self.curtailed(wall)
        )
        samples, status, sums = state.samples, state.status, self.sums
        revenue_dt, cost_dt, hours = revenue_per_hs * dt, cost_per_ws * dt, dt / 3600.0
        for device_id, device in state.devices.items():
            acc = sums.get(device_id)
            if acc is None:
                acc = sums[device_id] = [0.0] * 9
            sample = samples.get(device_id)
            if sample is not None and not status[device_id].reachable:
                sample = None
            if sample is None:
                power = revenue = cost = 0.0
            else:
                power = sample.power_w
                revenue = sample.hashrate_hs * revenue_dt
                cost = power * cost_dt
                acc[ENERGY_WH] += power * hours
                acc[REVENUE] += revenue
                acc[COST] += cost
            if held and device_id in held:
                acc[MAINTENANCE] += dt
                acc[ALWAYS_ON] += revenue - cost  # it would not have run either: no gain, no loss
                continue
            if sample is None:
                acc[DOWN] += dt
            elif sample.workload.is_running:
                acc[UP] += dt
            else:
                acc[CURTAILED] += dt
            acc[ALWAYS_ON] += (
                device.nominal_hashrate_hs * revenue_dt - device.nominal_power_w * cost_dt
            )
            if dr and sample is not None and power < device.nominal_power_w:
                acc[DR_WH] += (device.nominal_power_w - power) * hours

    def flush(self) -> None:
        """Write the sums to the store and start again from zero."""
        self._last_flush = self.clock()
        if not self.sums or self.day is None:
            return
        if self.store is None:
            return
        rows, self.sums = self.sums, {}
        try:
            add_report_days(self.store, self.day, rows)
        except StoreError as exc:  # kept for the next flush
            log.error("report sums not stored (kept for the next try): %s", exc)
            for device_id, values in rows.items():
                acc = self.sums.setdefault(device_id, [0.0] * 9)
                for index, value in enumerate(values):
                    acc[index] += value


def _round(value: float, digits: int = 4) -> float:
    return round(value, digits)


def _derived(values: tuple[float, ...]) -> dict[str, Any]:
    up, down, curtailed, maintenance, energy_wh, revenue, cost, always_on, dr_wh = values
    margin = revenue - cost
    return {
        "uptime": None if up + down <= 0 else _round(up / (up + down)),
        "up_hours": _round(up / 3600.0),
        "down_hours": _round(down / 3600.0),
        "curtailed_hours": _round(curtailed / 3600.0),
        "maintenance_hours": _round(maintenance / 3600.0),
        "energy_kwh": _round(energy_wh / 1000.0),
        "revenue_usd": _round(revenue),
        "energy_cost_usd": _round(cost),
        "margin_usd": _round(margin),
        "always_on_margin_usd": _round(always_on),
        "gain_over_always_on_usd": _round(margin - always_on),
        "dr_delivered_kwh": _round(dr_wh / 1000.0),
    }


def report_rows(
    accountant: Accountant,
    start: date,
    end: date,
    device: str | None = None,
    *,
    limit: int = 10_000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Rows per day and machine between start and end (inclusive), by day and machine."""
    accountant.flush()
    if accountant.store is None:
        return []
    return [
        {"day": row[0], "device": row[1], **_derived(row[2:])}
        for row in read_report_days(
            accountant.store, start, end, device, limit=limit, offset=offset
        )
    ]


def site_days(
    accountant: Accountant, start: date, end: date, device: str | None = None
) -> list[dict[str, Any]]:
    """Totals per day over the machines (one, with device), with the cumulative gain."""
    accountant.flush()
    if accountant.store is None:
        return []
    out = []
    cumulative = 0.0
    for row in read_site_days(accountant.store, start, end, device):
        totals = _derived(row[2:])
        cumulative += totals["gain_over_always_on_usd"]
        out.append(
            {"day": row[0], "machines": row[1], **totals, "cumulative_gain_usd": _round(cumulative)}
        )
    return out


def report_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with a header line."""
    out = io.StringIO()
    columns = list(rows[0]) if rows else ["day", "device"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
