"""Recorded ERCOT 15-minute prices and daily BTC figures: the CSV loaders and bundled slices.

The replay feeds over them are in drivers.market.replay.  The bundled slices
(``drivers/market/data``, attribution in ``NOTICE`` there) cover 2024-08-19..21,
including the record-demand evening of 2024-08-20.

ERCOT local times: the CSV holds wall-clock interval starts in US Central time
without a zone, 96 per local day even on the two DST days (the spring-forward
hour is present and the repeated autumn hour appears once, both flagged
``suspect_filled`` by the source).  Each interval keeps that wall time, with
``America/Chicago`` attached; intervals are identified by their position in the
file, never by arithmetic across a DST change.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.errors import Fatal

ERCOT_ZONE = ZoneInfo("America/Chicago")
INTERVAL_SECONDS = 900
INTERVAL = timedelta(seconds=INTERVAL_SECONDS)
LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M"

ERCOT_COLUMNS = (
    "interval_start_local",
    "hb_south_rtm_spp_usd_per_mwh",
    "hb_south_dam_spp_usd_per_mwh",
    "suspect_filled",
)
BTC_COLUMNS = ("date_utc", "btc_close_usd", "difficulty", "block_subsidy_btc")
BTC_FEES_COLUMN = "fees_btc_per_block"  # optional: mean transaction fees per block that UTC day

# Each halving's block (height, UTC time): the subsidy halves at that block, not at a date.
HALVINGS: tuple[tuple[int, datetime], ...] = (
    (210_000, datetime(2012, 11, 28, 15, 24, 38, tzinfo=UTC)),
    (420_000, datetime(2016, 7, 9, 16, 46, 13, tzinfo=UTC)),
    (630_000, datetime(2020, 5, 11, 19, 23, 43, tzinfo=UTC)),
    (840_000, datetime(2024, 4, 20, 0, 9, 27, tzinfo=UTC)),
)
INITIAL_SUBSIDY_BTC = 50.0

DataPath = str | os.PathLike[str] | Traversable


@dataclass(frozen=True, slots=True)
class PriceInterval:
    """One 15-minute settlement interval: local tz-aware start, real-time and day-ahead prices."""

    start: datetime
    rtm_usd_per_mwh: float
    dam_usd_per_mwh: float
    suspect: bool = False

    @property
    def end(self) -> datetime:
        """Wall-clock end of the interval (start + 15 minutes)."""
        return self.start + INTERVAL


@dataclass(frozen=True, slots=True)
class BtcDay:
    """One UTC day of bitcoin figures: close price, difficulty, block subsidy and (if known) fees."""

    date_utc: date
    btc_close_usd: float
    difficulty: float
    block_subsidy_btc: float
    fees_btc_per_block: float | None = None  # None: the file has no fees column


def bundled_ercot_path() -> Traversable:
    """Return the bundled ERCOT HB_SOUTH slice, 2024-08-19 00:00 to 2024-08-21 23:45 local."""
    return resources.files("drivers.market").joinpath("data", "ercot_hb_south_2024-08-19_21.csv")


def bundled_btc_path() -> Traversable:
    """Return the bundled BTC daily rows for 2024-08-19..21."""
    return resources.files("drivers.market").joinpath("data", "btc_daily_2024-08-19_21.csv")


def parse_local_time(text: str) -> datetime:
    """Parse ``YYYY-MM-DD HH:MM`` as ERCOT wall-clock time (America/Chicago attached)."""
    return datetime.strptime(text.strip(), LOCAL_TIME_FORMAT).replace(tzinfo=ERCOT_ZONE)


def _rows(path: DataPath, columns: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """Yield (line number, row) of a CSV file whose header must hold the given columns."""
    source = Path(path) if isinstance(path, str | os.PathLike) else path
    line = 0
    try:
        with (
            source.open("rb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as stream,
        ):
            reader = csv.DictReader(stream)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise Fatal(str(path), f"line 1: missing column(s) {', '.join(missing)}")
            for row in reader:
                line = reader.line_num
                if None in row or any(row[c] is None for c in columns):
                    width = len(reader.fieldnames or ())
                    raise Fatal(str(path), f"line {line}: expected {width} fields")
                yield line, row
    except OSError as exc:
        raise Fatal(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Fatal(str(path), f"line {line + 1}: not CSV text: {exc}") from exc


def _number(path: DataPath, line: int, row: Mapping[str, str], column: str) -> float:
    """Read one finite number from a row, or raise Fatal naming file, line and column."""
    text = row[column].strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Fatal(str(path), f"line {line}: {column}: expected a finite number, got {text!r}")
    return value


def load_ercot_csv(path: DataPath) -> list[PriceInterval]:
    """Load an ERCOT 15-minute price file; raise Fatal naming file and line on a malformed row."""
    intervals: list[PriceInterval] = []
    for line, row in _rows(path, ERCOT_COLUMNS):
        text = row["interval_start_local"]
        try:
            start = parse_local_time(text)
        except ValueError:
            raise Fatal(
                str(path),
                f"line {line}: interval_start_local: expected YYYY-MM-DD HH:MM, got {text!r}",
            ) from None
        if start.minute % 15:
            raise Fatal(
                str(path), f"line {line}: interval_start_local {text!r} is not on a quarter hour"
            )
        if intervals and start <= intervals[-1].start:
            raise Fatal(
                str(path),
                f"line {line}: {text} does not follow {intervals[-1].start:%Y-%m-%d %H:%M}",
            )
        suspect = row["suspect_filled"].strip()
        if suspect not in ("0", "1"):
            raise Fatal(str(path), f"line {line}: suspect_filled: expected 0 or 1, got {suspect!r}")
        intervals.append(
            PriceInterval(
                start=start,
                rtm_usd_per_mwh=_number(path, line, row, "hb_south_rtm_spp_usd_per_mwh"),
                dam_usd_per_mwh=_number(path, line, row, "hb_south_dam_spp_usd_per_mwh"),
                suspect=suspect == "1",
            )
        )
    if not intervals:
        raise Fatal(str(path), "no intervals")
    return intervals


def load_btc_daily_csv(path: DataPath) -> list[BtcDay]:
    """Load a BTC daily file (date_utc, btc_close_usd, difficulty, block_subsidy_btc, ...)."""
    days: list[BtcDay] = []
    for line, row in _rows(path, BTC_COLUMNS):
        fees = None
        if BTC_FEES_COLUMN in row:
            fees = _number(
                path, line, {BTC_FEES_COLUMN: row[BTC_FEES_COLUMN] or ""}, BTC_FEES_COLUMN
            )
            if fees < 0:
                raise Fatal(str(path), f"line {line}: {BTC_FEES_COLUMN}: expected >= 0, got {fees}")
        text = row["date_utc"].strip()
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise Fatal(
                str(path), f"line {line}: date_utc: expected YYYY-MM-DD, got {text!r}"
            ) from None
        if days and day <= days[-1].date_utc:
            raise Fatal(str(path), f"line {line}: {day} does not follow {days[-1].date_utc}")
        difficulty = _number(path, line, row, "difficulty")
        if difficulty <= 0:
            raise Fatal(str(path), f"line {line}: difficulty: expected > 0, got {difficulty}")
        days.append(
            BtcDay(
                date_utc=day,
                btc_close_usd=_number(path, line, row, "btc_close_usd"),
                difficulty=difficulty,
                block_subsidy_btc=_number(path, line, row, "block_subsidy_btc"),
                fees_btc_per_block=fees,
            )
        )
    if not days:
        raise Fatal(str(path), "no rows")
    return days


def subsidy_over(day: BtcDay, start: datetime, end: datetime) -> float:
    """Mean block subsidy over [start, end) (tz-aware) inside the UTC day of ``day``.

    The daily row holds one subsidy; on the UTC day of a halving (``HALVINGS``)
    the subsidy changes at that block's time instead: the old one before it,
    the new one after it, time-weighted across an interval that spans it.
    """
    for index, (_, when) in enumerate(HALVINGS):
        if when.date() != day.date_utc:
            continue
        before = INITIAL_SUBSIDY_BTC / (1 << index)
        after = before / 2
        if end <= when:
            return before
        if start >= when:
            return after
        share = (when - start) / (end - start)
        return before * share + after * (1.0 - share)
    return day.block_subsidy_btc


def intervals_from(
    intervals: Sequence[PriceInterval], start: datetime | str
) -> list[PriceInterval]:
    """Return the intervals from the one containing start (local time) on; ValueError if none."""
    when = parse_local_time(start) if isinstance(start, str) else start
    for index, interval in enumerate(intervals):
        if interval.start <= when < interval.end:
            return list(intervals[index:])
    raise ValueError(f"{when:%Y-%m-%d %H:%M} is outside the recorded intervals")
