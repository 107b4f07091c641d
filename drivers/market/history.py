"""Replays recorded ERCOT 15-minute prices and daily BTC figures as live market feeds.

The bundled slices (``drivers/market/data``, attribution in ``NOTICE`` there)
cover 2024-08-19..21, including the record-demand evening of 2024-08-20.

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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.base import MarketFeed
from drivers.errors import Fatal, Unavailable
from drivers.market.registry import FeedContext, MarketPlugin
from scheduler.core.model import Reading

ERCOT_ZONE = ZoneInfo("America/Chicago")
INTERVAL_SECONDS = 900
INTERVAL = timedelta(seconds=INTERVAL_SECONDS)
LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M"
# A replay position this close below an interval boundary counts as on it (float noise).
_BOUNDARY_SLACK = 1e-9

ERCOT_COLUMNS = (
    "interval_start_local",
    "hb_south_rtm_spp_usd_per_mwh",
    "hb_south_dam_spp_usd_per_mwh",
    "suspect_filled",
)
BTC_COLUMNS = ("date_utc", "btc_close_usd", "difficulty", "block_subsidy_btc")

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
    """One UTC day of bitcoin figures: close price, difficulty and block subsidy."""

    date_utc: date
    btc_close_usd: float
    difficulty: float
    block_subsidy_btc: float


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
            )
        )
    if not days:
        raise Fatal(str(path), "no rows")
    return days


def intervals_from(
    intervals: Sequence[PriceInterval], start: datetime | str
) -> list[PriceInterval]:
    """Return the intervals from the one containing start (local time) on; ValueError if none."""
    when = parse_local_time(start) if isinstance(start, str) else start
    for index, interval in enumerate(intervals):
        if interval.start <= when < interval.end:
            return list(intervals[index:])
    raise ValueError(f"{when:%Y-%m-%d %H:%M} is outside the recorded intervals")


class ErcotReplayFeed:
    """Power price from recorded intervals, advancing 15 market minutes every 900/speed seconds.

    The replay is at the first interval at ``start_at`` (default: when the feed
    is created) and holds there if asked earlier.  After the last interval has
    run its 15 minutes every call raises ``Unavailable("replay ended")``: the
    loop then sees a stale price and applies its safe action, as it would with
    a live feed gone quiet.
    """

    def __init__(
        self,
        intervals: Sequence[PriceInterval],
        *,
        speed: float,
        start_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "ercot-replay",
    ) -> None:
        if not intervals:
            raise ValueError("a replay needs at least one interval")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {speed}")
        self.name = name
        self.speed = speed
        self.clock = clock
        self.intervals: tuple[PriceInterval, ...] = tuple(intervals)
        self.start_at = clock() if start_at is None else start_at

    def _position(self, now: float) -> tuple[int, float]:
        """Index of the interval the replay is in at now, and market seconds into it."""
        market_seconds = max(0.0, now - self.start_at) * self.speed
        index = math.floor(market_seconds / INTERVAL_SECONDS + _BOUNDARY_SLACK)
        if index >= len(self.intervals):
            raise Unavailable(self.name, "replay ended")
        return index, max(0.0, market_seconds - index * INTERVAL_SECONDS)

    def duration_seconds(self) -> float:
        """Return how many clock seconds the whole replay lasts at its speed."""
        return len(self.intervals) * INTERVAL_SECONDS / self.speed

    def ended(self, now: float | None = None) -> bool:
        """Return True once the last interval has been replayed."""
        try:
            self._position(self.clock() if now is None else now)
        except Unavailable:
            return True
        return False

    def current_interval(self, now: float | None = None) -> PriceInterval:
        """Return the interval the replay is in; raises Unavailable after the end."""
        index, _ = self._position(self.clock() if now is None else now)
        return self.intervals[index]

    def replay_time(self, now: float | None = None) -> datetime:
        """Return the market's local wall time the replay is at; Unavailable after the end."""
        index, into = self._position(self.clock() if now is None else now)
        return self.intervals[index].start + timedelta(seconds=into)

    async def fetch(self) -> dict[str, Reading]:
        """Return the real-time price of the current interval as power_price_usd_per_mwh."""
        now = self.clock()
        interval = self.current_interval(now)
        reading = Reading(value=interval.rtm_usd_per_mwh, observed_at=now, source=self.name)
        return {"power_price_usd_per_mwh": reading}


class BtcDailyFeed:
    """BTC price, difficulty and subsidy of the replay's day, so hashprice follows the record.

    The day is the ERCOT market's local date: a daily close cannot resolve the
    hours between Central time and UTC.  Fees are not in the record; they are
    reported as 0.0 with a source that says so.  Readings are observed at
    ``clock()``, by default the replay's clock.
    """

    def __init__(
        self,
        replay: ErcotReplayFeed,
        days: Iterable[BtcDay],
        *,
        clock: Callable[[], float] | None = None,
        name: str = "btc-daily",
    ) -> None:
        self.name = name
        self.replay = replay
        self.clock = replay.clock if clock is None else clock
        self.days: dict[date, BtcDay] = {day.date_utc: day for day in days}
        if not self.days:
            raise ValueError("BtcDailyFeed needs at least one day")

    def current_day(self, now: float | None = None) -> BtcDay:
        """Return the BTC row for the replay's market date; Unavailable when there is none."""
        try:
            market_date = self.replay.replay_time(self.clock() if now is None else now).date()
        except Unavailable as exc:
            raise Unavailable(self.name, exc.message) from exc
        day = self.days.get(market_date)
        if day is None:
            raise Unavailable(self.name, f"no BTC row for {market_date}")
        return day

    async def fetch(self) -> dict[str, Reading]:
        """Return BTC price, difficulty, subsidy, and fees as 0.0 (unknown in the record)."""
        now = self.clock()
        day = self.current_day(now)
        return {
            "btc_price_usd": Reading(day.btc_close_usd, now, self.name),
            "difficulty": Reading(day.difficulty, now, self.name),
            "block_subsidy_btc": Reading(day.block_subsidy_btc, now, self.name),
            "fees_btc_per_block": Reading(0.0, now, f"{self.name}/fees-unknown"),
        }


class ReplayPriceConfig(BaseModel):
    """Replays a recorded ERCOT 15-minute trace as the live power price (demo, tests)."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["ercot-replay"] = "ercot-replay"
    path: Path | None = Field(None, description="CSV; default: the bundled 2024-08-19..21 slice")
    start: str | None = Field(None, description="local time to start from, e.g. 2024-08-19 00:00")
    speed: float = Field(1.0, gt=0, le=1_000_000, description="replay speed-up (1 = real time)")

    @field_validator("start")
    @classmethod
    def _local_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.strptime(value, "%Y-%m-%d %H:%M")
            except ValueError:
                raise ValueError(f"expected YYYY-MM-DD HH:MM, got {value!r}") from None
        return value


def _replay_feeds(options: ReplayPriceConfig, context: FeedContext) -> list[MarketFeed]:
    """The price replay and the BTC days it covers."""
    intervals = load_ercot_csv(options.path or bundled_ercot_path())
    if options.start:
        intervals = intervals_from(intervals, parse_local_time(options.start))
    replay = ErcotReplayFeed(intervals, speed=options.speed, clock=context.clock)
    btc = BtcDailyFeed(replay, load_btc_daily_csv(bundled_btc_path()), clock=context.clock)
    return [replay, btc]


PLUGINS = (MarketPlugin(tag="ercot-replay", options=ReplayPriceConfig, factory=_replay_feeds),)
