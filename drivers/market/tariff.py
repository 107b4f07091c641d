"""A time-of-use tariff: the power price from a weekly schedule in the site's time zone."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from datetime import time as clock_time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.base import MarketFeed
from drivers.market.registry import FeedContext, MarketPlugin
from scheduler.core.model import Reading

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TariffPeriod(BaseModel):
    """One priced window: on these days, from start (inclusive) to end (exclusive), local time."""

    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: clock_time
    end: clock_time = Field(description="00:00 means midnight at the end of the day")
    usd_per_mwh: float = Field(ge=-1000, le=10_000)

    @model_validator(mode="after")
    def _ordered(self) -> TariffPeriod:
        if self.end != clock_time(0) and self.end <= self.start:
            raise ValueError(
                f"end {self.end} is not after start {self.start} (split overnight periods)"
            )
        return self

    def covers(self, local: datetime) -> bool:
        """True when the local time falls in this period."""
        if DAYS[local.weekday()] not in self.days:
            return False
        now = local.time().replace(tzinfo=None)
        return self.start <= now and (self.end == clock_time(0) or now < self.end)


class TariffConfig(BaseModel):
    """[[market]] driver = "tariff": a time-of-use schedule (first matching period wins)."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["tariff"] = "tariff"
    default_usd_per_mwh: float = Field(ge=-1000, le=10_000, description="outside every period")
    periods: list[TariffPeriod] = Field(default_factory=list)


class TariffFeed:
    """MarketFeed for ``power_price_usd_per_mwh`` from a schedule; never fails, always fresh."""

    def __init__(
        self,
        config: TariffConfig,
        timezone: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str = "tariff",
    ) -> None:
        self.name = name
        self.config = config
        self.zone = ZoneInfo(timezone)
        self._clock = clock
        self._wall = wall_clock

    def price_at(self, wall: datetime) -> float:
        """The tariff price in force at a tz-aware instant."""
        local = wall.astimezone(self.zone)
        for period in self.config.periods:
            if period.covers(local):
                return period.usd_per_mwh
        return self.config.default_usd_per_mwh

    async def fetch(self) -> dict[str, Reading]:
        """The price in force now."""
        price = self.price_at(self._wall())
        return {"power_price_usd_per_mwh": Reading(price, self._clock(), self.name)}


def _feeds(options: TariffConfig, context: FeedContext) -> list[MarketFeed]:
    return [TariffFeed(options, context.timezone, clock=context.clock)]


PLUGINS = (MarketPlugin(tag="tariff", options=TariffConfig, factory=_feeds),)
