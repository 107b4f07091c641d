"""Ancillary-service awards settled on a backtest: what holding curtailable load is worth.

An award of ``award_mw`` (ECRS, Non-Spin, RRS: load that sheds on
deployment) is paid a capacity price per MW-hour for each interval of the
award window; the site must keep that much load running and ready to shed.
The window and the prices are the user's CSV (``--award-prices``: columns
``interval_start``, ISO 8601 with offset, 15-minute aligned, and
``usd_per_mw_h``); none are shipped.

For each strategy: the capacity revenue (MW x price x 0.25 h over the
priced intervals), the energy forgone -- in each priced interval where the
strategy ran less than the award, the extra load it must run costs the
energy price minus what that load earns mining (always-on's mining revenue
per MWh in that interval), counted when positive -- and the margin after
both.  Deployments (the load shed when called) are not simulated: a deployed
interval earns the same capacity price and costs no energy.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.backtest.engine import (
    INTERVAL_HOURS,
    BacktestError,
    BacktestReport,
    StrategyResult,
    Trace,
)

MAX_ROWS = 200_000


def load_award_prices(path: str | Path) -> dict[datetime, float]:
    """Interval start (UTC) -> capacity price in USD per MW-hour."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BacktestError(f"{path}: cannot read: {exc}") from exc
    if not rows or not {"interval_start", "usd_per_mw_h"} <= set(rows[0]):
        raise BacktestError(f"{path}: needs columns interval_start and usd_per_mw_h, and rows")
    if len(rows) > MAX_ROWS:
        raise BacktestError(f"{path}: {len(rows)} rows; at most {MAX_ROWS}")
    prices: dict[datetime, float] = {}
    for line, row in enumerate(rows, start=2):
        text = (row.get("interval_start") or "").strip()
        try:
            start = datetime.fromisoformat(text)
            price = float(row.get("usd_per_mw_h") or "")
        except ValueError:
            raise BacktestError(f"{path}:{line}: not a time and a price") from None
        if start.tzinfo is None:
            raise BacktestError(f"{path}:{line}: {text!r} has no UTC offset")
        if start.minute % 15 or start.second or start.microsecond:
            raise BacktestError(f"{path}:{line}: {text!r} does not start a 15-minute interval")
        if not (math.isfinite(price) and 0 <= price <= 100_000):
            raise BacktestError(f"{path}:{line}: price {price} outside 0..100000 USD/MW-h")
        key = start.astimezone(UTC)
        if key in prices:
            raise BacktestError(f"{path}:{line}: {text} appears twice")
        prices[key] = price
    return prices


@dataclass(frozen=True, slots=True)
class AwardStrategy:
    """One strategy with the award."""

    capacity_revenue_usd: float
    energy_forgone_usd: float
    short_intervals: int  # priced intervals where the strategy ran less than the award
    margin_usd: float
    margin_with_award_usd: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "capacity_revenue_usd": round(self.capacity_revenue_usd, 2),
            "energy_forgone_usd": round(self.energy_forgone_usd, 2),
            "short_intervals": self.short_intervals,
            "margin_usd": round(self.margin_usd, 4),
            "margin_with_award_usd": round(self.margin_with_award_usd, 4),
        }


@dataclass(frozen=True, slots=True)
class AwardReport:
    """The award settled on every strategy."""

    award_mw: float
    priced_intervals: int
    strategies: dict[str, AwardStrategy]

    def as_dict(self) -> dict[str, Any]:
        """The ``award`` section of the backtest JSON."""
        return {
            "award_mw": self.award_mw,
            "priced_intervals": self.priced_intervals,
            "strategies": {name: s.as_dict() for name, s in self.strategies.items()},
        }


def priced_positions(trace: Trace, prices: dict[datetime, float]) -> list[tuple[int, float]]:
    """(trace index, price) of the priced intervals; BacktestError when none lie in the trace."""
    found = [
        (i, prices[start])
        for i, interval in enumerate(trace.intervals)
        if (start := interval.start.astimezone(UTC)) in prices
    ]
    if not found:
        raise BacktestError("no award price interval lies in the backtest's trace")
    return found


def settle_award(
    report: BacktestReport, award_mw: float, prices: dict[datetime, float]
) -> AwardReport:
    """Capacity revenue, energy forgone and margin with the award, per strategy."""
    if not (math.isfinite(award_mw) and award_mw > 0):
        raise BacktestError(f"--award-mw must be > 0, got {award_mw}")
    positions = priced_positions(report.trace, prices)
    always_on = report.always_on
    award_kw = award_mw * 1000.0
    results: dict[str, StrategyResult] = {
        "policy": report.policy,
        "always_on": always_on,
        "naive_threshold": report.naive,
        "optimum": report.optimum,
    }
    strategies = {}
    for name, result in results.items():
        revenue = forgone = 0.0
        short = 0
        for index, price in positions:
            revenue += award_mw * price * INTERVAL_HOURS
            running_kw = result.power_series_kw[index]
            if running_kw >= award_kw:
                continue
            short += 1
            energy_price = report.trace.intervals[index].rtm_usd_per_mwh
            ao_kw = always_on.power_series_kw[index]
            ao_mwh = ao_kw / 1000.0 * INTERVAL_HOURS
            mining_per_mwh = 0.0
            if ao_mwh > 0:  # always-on's revenue in the interval = margin + energy cost
                series = always_on.margin_series_usd  # cumulative
                ao_margin = series[index] - (series[index - 1] if index > 0 else 0.0)
                ao_revenue = ao_margin + ao_mwh * energy_price
                mining_per_mwh = ao_revenue / ao_mwh
            extra_mwh = (award_kw - running_kw) / 1000.0 * INTERVAL_HOURS
            forgone += max(0.0, extra_mwh * (energy_price - mining_per_mwh))
        strategies[name] = AwardStrategy(
            capacity_revenue_usd=revenue,
            energy_forgone_usd=forgone,
            short_intervals=short,
            margin_usd=result.margin_usd,
            margin_with_award_usd=result.margin_usd + revenue - forgone,
        )
    return AwardReport(award_mw, len(positions), strategies)
