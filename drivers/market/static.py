"""A market feed of fixed values, for sites without live feeds and for tests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.base import MarketFeed
from drivers.market.registry import FeedContext, MarketPlugin
from scheduler.core.model import MARKET_INPUTS, Reading


class StaticMarketFeed:
    """Returns the same configured values on every fetch, each observed at the time of the fetch.

    Takes plain values keyed by MarketState field name (see MARKET_INPUTS);
    None values are skipped, so a config section can be passed as it is dumped.
    """

    def __init__(
        self,
        values: Mapping[str, float | None],
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "static",
    ) -> None:
        unknown = sorted(set(values) - set(MARKET_INPUTS))
        if unknown:
            raise ValueError(
                f"unknown market input(s) {', '.join(unknown)}; known: {', '.join(MARKET_INPUTS)}"
            )
        kept: dict[str, float] = {}
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key}: expected a finite number, got {value!r}")
            kept[key] = float(value)
        if not kept:
            raise ValueError("a static market feed needs at least one value")
        self.name = name
        self.values: Mapping[str, float] = MappingProxyType(kept)
        self._clock = clock

    async def fetch(self) -> dict[str, Reading]:
        """Return one reading per configured value, observed now."""
        now = self._clock()
        return {key: Reading(value, now, self.name) for key, value in self.values.items()}


class StaticMarketConfig(BaseModel):
    """Fixed market values, for sites without live feeds and for tests."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["static"] = "static"
    btc_price_usd: float | None = Field(None, gt=0, le=10_000_000)
    difficulty: float | None = Field(None, gt=0)
    block_subsidy_btc: float | None = Field(3.125, ge=0, le=50)
    fees_btc_per_block: float | None = Field(0.0, ge=0, le=100)
    power_price_usd_per_mwh: float | None = Field(None, ge=-1000, le=10_000)


def _feeds(options: StaticMarketConfig, context: FeedContext) -> list[MarketFeed]:
    values = {
        name: value
        for name, value in options.model_dump(exclude={"driver"}).items()
        if value is not None
    }
    return [StaticMarketFeed(values, clock=context.clock)]


PLUGINS = (MarketPlugin(tag="static", options=StaticMarketConfig, factory=_feeds),)
