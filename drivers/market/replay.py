"""Replays recorded ERCOT 15-minute prices and daily BTC figures as live market feeds.

The records and their loaders are in drivers.market.history.  Intervals are
identified by their position in the record, never by arithmetic across a DST
change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.base import MarketFeed
from drivers.errors import Unavailable
from drivers.market.history import (
    INTERVAL_SECONDS,
    BtcDay,
    PriceInterval,
    bundled_btc_path,
    bundled_ercot_path,
    intervals_from,
    load_btc_daily_csv,
    load_ercot_csv,
    parse_local_time,
)
from drivers.market.registry import FeedContext, MarketPlugin
from scheduler.core.model import Reading

# A replay position this close below an interval boundary counts as on it (float noise).
_BOUNDARY_SLACK = 1e-9


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
