"""The static market feed: fixed values, observed at each fetch."""

from __future__ import annotations

import math

import pytest

from drivers.base import MarketFeed
from drivers.market.static import StaticMarketConfig, StaticMarketFeed
from scheduler.core.model import MARKET_INPUTS, MarketState
from tests.fakes import FakeClock


async def test_returns_every_value_observed_now() -> None:
    clock = FakeClock(5.0)
    values = {"btc_price_usd": 60_000.0, "power_price_usd_per_mwh": -12.5, "difficulty": 8.6e13}
    feed = StaticMarketFeed(values, clock=clock)
    assert isinstance(feed, MarketFeed)
    first = await feed.fetch()
    assert {k: r.value for k, r in first.items()} == values
    assert all(r.observed_at == 5.0 and r.source == "static" for r in first.values())
    clock.now = 65.0
    second = await feed.fetch()
    assert all(r.observed_at == 65.0 for r in second.values())
    # The readings drop straight into MarketState.
    assert MarketState(**second).power_price_usd_per_mwh == second["power_price_usd_per_mwh"]


async def test_none_values_are_skipped_so_a_config_dump_can_be_passed() -> None:
    config = StaticMarketConfig(btc_price_usd=59_013.8, power_price_usd_per_mwh=30.0)
    dumped = config.model_dump(exclude={"driver"})
    assert set(dumped) == set(MARKET_INPUTS)
    feed = StaticMarketFeed(dumped, clock=FakeClock(0.0), name="site-static")
    readings = await feed.fetch()
    expected = {k: v for k, v in dumped.items() if v is not None}
    assert "difficulty" not in readings  # None in the config
    assert {k: r.value for k, r in readings.items()} == expected
    assert {r.source for r in readings.values()} == {"site-static"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"btc_price": 1.0}, "unknown market input"),
        ({"power_price_usd_per_mwh": math.nan}, "finite"),
        ({"difficulty": math.inf}, "finite"),
        ({"difficulty": "8e13"}, "number"),
        ({"difficulty": True}, "number"),
        ({}, "at least one"),
        ({"btc_price_usd": None}, "at least one"),
    ],
)
def test_rejects_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StaticMarketFeed(values)  # type: ignore[arg-type]


async def test_values_cannot_be_changed_behind_the_feed() -> None:
    values = {"btc_price_usd": 1.0}
    feed = StaticMarketFeed(values, clock=FakeClock(0.0))
    values["btc_price_usd"] = 2.0
    assert (await feed.fetch())["btc_price_usd"].value == 1.0
