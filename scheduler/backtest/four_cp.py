"""ERCOT four coincident peak (4CP) settlement of a backtest: the transmission charge a summer sets.

ERCOT allocates transmission costs by each site's load in the 15-minute
interval of the system's peak in each of June, July, August and September
(the 4CP intervals, published by ERCOT after each month).  The site's 4CP tag
is the average of its load in those intervals; the next year's transmission
charge is the tag times a rate (USD per kW-year, from the site's utility
tariff).  Here each strategy's tag is read from its settled power in the
given intervals, and its charge compared with always-on's.

The intervals are an input (``--4cp-intervals CSV``, column
``interval_start``: the start of each interval, ISO 8601 with its UTC
offset); none are shipped.  Every interval must lie in the trace.  The
hindsight optimum optimises energy only: it knows nothing of 4CP.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.backtest.engine import BacktestError, BacktestReport, StrategyResult, Trace

COLUMN = "interval_start"
MAX_INTERVALS = 120  # ten years of four a summer: more is not a 4CP file


def load_4cp_csv(path: str | Path) -> tuple[datetime, ...]:
    """The 4CP interval starts of a CSV (one ``interval_start`` column), sorted, in UTC."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BacktestError(f"{path}: cannot read: {exc}") from exc
    if not rows or COLUMN not in rows[0]:
        raise BacktestError(f"{path}: needs a header with an {COLUMN!r} column and rows")
    if len(rows) > MAX_INTERVALS:
        raise BacktestError(f"{path}: {len(rows)} rows; at most {MAX_INTERVALS} intervals")
    starts: list[datetime] = []
    for line, row in enumerate(rows, start=2):
        text = (row.get(COLUMN) or "").strip()
        try:
            start = datetime.fromisoformat(text)
        except ValueError:
            raise BacktestError(f"{path}:{line}: {text!r} is not an ISO 8601 time") from None
        if start.tzinfo is None:
            raise BacktestError(f"{path}:{line}: {text!r} has no UTC offset")
        if start.minute % 15 or start.second or start.microsecond:
            raise BacktestError(f"{path}:{line}: {text!r} does not start a 15-minute interval")
        starts.append(start.astimezone(UTC))
    months = [(s.year, s.month) for s in starts]
    if len(set(months)) != len(months):
        raise BacktestError(f"{path}: two intervals in one month (4CP has one per month)")
    return tuple(sorted(starts))


@dataclass(frozen=True, slots=True)
class FourCpStrategy:
    """One strategy's load in each 4CP interval, its tag and its charge."""

    name: str
    kw: tuple[float, ...]
    tag_kw: float
    charge_usd: float
    savings_usd: float  # always-on's charge minus this one's
    margin_usd: float  # the strategy's energy margin
    margin_after_4cp_usd: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "kw_in_intervals": [round(kw, 3) for kw in self.kw],
            "tag_kw": round(self.tag_kw, 3),
            "charge_usd": round(self.charge_usd, 2),
            "savings_vs_always_on_usd": round(self.savings_usd, 2),
            "margin_after_4cp_usd": round(self.margin_after_4cp_usd, 4),
        }


@dataclass(frozen=True, slots=True)
class FourCpReport:
    """The 4CP settlement of every strategy of a backtest."""

    rate_usd_per_kw_year: float
    intervals: tuple[datetime, ...]
    strategies: dict[str, FourCpStrategy]

    def as_dict(self) -> dict[str, Any]:
        """The ``four_cp`` section of the backtest JSON."""
        return {
            "rate_usd_per_kw_year": self.rate_usd_per_kw_year,
            "intervals_utc": [f"{start:%Y-%m-%dT%H:%M}Z" for start in self.intervals],
            "strategies": {name: s.as_dict() for name, s in self.strategies.items()},
        }


def check_in_trace(trace: Trace, intervals: tuple[datetime, ...]) -> list[int]:
    """The trace index of each 4CP interval; BacktestError naming those outside the trace."""
    index_of = {interval.start.astimezone(UTC): i for i, interval in enumerate(trace.intervals)}
    missing = [start for start in intervals if start not in index_of]
    if missing:
        shown = ", ".join(f"{start:%Y-%m-%dT%H:%M}Z" for start in missing[:4])
        raise BacktestError(f"4CP intervals outside the trace: {shown}")
    return [index_of[start] for start in intervals]


def settle_4cp(
    report: BacktestReport, intervals: tuple[datetime, ...], rate_usd_per_kw_year: float
) -> FourCpReport:
    """Each strategy's 4CP tag (mean kW over the intervals) x rate, and its savings vs always-on."""
    if not (math.isfinite(rate_usd_per_kw_year) and rate_usd_per_kw_year >= 0):
        raise BacktestError(f"4CP rate must be >= 0 USD/kW-year, got {rate_usd_per_kw_year}")
    if not intervals:
        raise BacktestError("no 4CP intervals given")
    positions = check_in_trace(report.trace, intervals)
    results: dict[str, StrategyResult] = {
        "policy": report.policy,
        "always_on": report.always_on,
        "naive_threshold": report.naive,
        "optimum": report.optimum,
    }
    charges: dict[str, tuple[tuple[float, ...], float, float]] = {}
    for name, result in results.items():
        kw = tuple(result.power_series_kw[i] for i in positions)
        tag_kw = sum(kw) / len(kw)
        charges[name] = (kw, tag_kw, tag_kw * rate_usd_per_kw_year)
    baseline = charges["always_on"][2]
    strategies = {
        name: FourCpStrategy(
            name=name,
            kw=kw,
            tag_kw=tag_kw,
            charge_usd=charge,
            savings_usd=baseline - charge,
            margin_usd=results[name].margin_usd,
            margin_after_4cp_usd=results[name].margin_usd - charge,
        )
        for name, (kw, tag_kw, charge) in charges.items()
    }
    return FourCpReport(rate_usd_per_kw_year, intervals, strategies)
