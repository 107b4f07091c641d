"""Live market feeds against recorded responses served over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from drivers.errors import DriverError, Fatal, MalformedReply, Timeout, Unavailable
from drivers.market.btc_price import BtcPriceConfig, BtcPriceFeed
from drivers.market.ercot import ErcotConfig, ErcotRtmFeed
from drivers.market.http import RateLimited
from drivers.market.network import (
    BitcoindConfig,
    BitcoindFeed,
    MempoolNetworkConfig,
    MempoolNetworkFeed,
    block_subsidy_btc,
)
from drivers.market.tariff import TariffConfig, TariffFeed
from tests.drivers.market.replay_server import ReplayServer, Reply, fixture
from tests.fakes import FakeClock


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def btc_feed(
    server: ReplayServer, client: httpx.AsyncClient, clock: FakeClock, **extra: object
) -> BtcPriceFeed:
    config = BtcPriceConfig.model_validate(
        {
            "sources": {
                "mempool": server.url("/api/v1/prices"),
                "coinbase": server.url("/v2/prices/BTC-USD/spot"),
                "kraken": server.url("/0/public/Ticker"),
                "coingecko": server.url("/api/v3/simple/price"),
            },
            "interval_seconds": 10,
            "max_age_seconds": 60,
            "timeout_seconds": 0.5,
            **extra,
        }
    )
    return BtcPriceFeed(config, client, clock=clock)


def serve_btc(server: ReplayServer) -> None:
    server.set("/api/v1/prices", Reply(body=fixture("mempool/prices.json")))
    server.set("/v2/prices/BTC-USD/spot", Reply(body=fixture("coinbase/spot.json")))
    server.set("/0/public/Ticker", Reply(body=fixture("kraken/ticker.json")))
    server.set("/api/v3/simple/price", Reply(body=fixture("coingecko/simple_price.json")))


async def test_btc_price_is_the_median_of_four_sources(
    server: ReplayServer, client: httpx.AsyncClient
) -> None:
    serve_btc(server)
    feed = btc_feed(server, client, FakeClock())
    reading = (await feed.fetch())["btc_price_usd"]
    # 94598, 94612, 94640, 94655.315 -> median of the middle two
    assert reading.value == pytest.approx((94612 + 94640) / 2)
    assert reading.source == "median(mempool,coinbase,kraken,coingecko)"


async def test_btc_bad_sources_are_dropped_and_age_out(
    server: ReplayServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    serve_btc(server)
    feed = btc_feed(server, client, clock)
    await feed.fetch()
    # Next round: one 5xx, one NaN, one absurd (10x), one truncated; all refused.
    server.set("/api/v1/prices", Reply(502, b"bad gateway"))
    server.set("/v2/prices/BTC-USD/spot", Reply(body=b'{"data": {"amount": "NaN"}}'))
    server.set(
        "/0/public/Ticker",
        Reply(body=fixture("kraken/ticker.json").replace(b"94640.00000", b"946400.0")),
    )
    server.set(
        "/api/v3/simple/price", Reply(body=fixture("coingecko/simple_price.json"), truncate_to=10)
    )
    clock.now += 11
    reading = (await feed.fetch())["btc_price_usd"]
    assert reading.observed_at == 1000.0  # the old values, still fresh enough
    assert not any(feed.up().values())
    assert feed.rejected == {"unavailable": 2, "malformed": 2}
    clock.now += 60  # now every value is too old: the feed is down
    with pytest.raises(Unavailable, match="0 fresh source"):
        await feed.fetch()


async def test_429_retry_after_is_honoured(server: ReplayServer, client: httpx.AsyncClient) -> None:
    clock = FakeClock()
    server.set(
        "/api/v1/blocks",
        Reply(429, b"slow down", {"Retry-After": "120"}),
        Reply(body=fixture("mempool/blocks.json")),
    )
    feed = MempoolNetworkFeed(
        MempoolNetworkConfig(url=server.url("/api/v1/blocks")), client, clock=clock
    )
    with pytest.raises(RateLimited) as caught:
        await feed.fetch()
    assert caught.value.retry_after_seconds == 120
    clock.now += 100
    with pytest.raises(Unavailable, match="backing off"):
        await feed.fetch()
    assert len(server.requests) == 1  # no request made while backing off
    clock.now += 21
    readings = await feed.fetch()
    assert readings["difficulty"].value == 102289407543323.8
    assert readings["block_subsidy_btc"].value == 3.125
    assert readings["fees_btc_per_block"].value == pytest.approx(0.095)  # mean of 5..14 M sat
    assert feed.tip_height == 872_400


async def test_slow_and_truncated_replies(server: ReplayServer, client: httpx.AsyncClient) -> None:
    server.set("/api/v1/blocks", Reply(body=fixture("mempool/blocks.json"), delay_s=1.0))
    config = MempoolNetworkConfig(url=server.url("/api/v1/blocks"), timeout_seconds=0.2)
    with pytest.raises(Timeout):
        await MempoolNetworkFeed(config, client).fetch()
    server.set("/api/v1/blocks", Reply(body=fixture("mempool/blocks.json"), truncate_to=300))
    with pytest.raises(Unavailable):
        await MempoolNetworkFeed(
            MempoolNetworkConfig(url=server.url("/api/v1/blocks")), client
        ).fetch()
    server.set("/api/v1/blocks", Reply(body=b"[]"))
    with pytest.raises(MalformedReply):
        await MempoolNetworkFeed(
            MempoolNetworkConfig(url=server.url("/api/v1/blocks")), client
        ).fetch()


async def test_bitcoind_json_rpc(server: ReplayServer, client: httpx.AsyncClient) -> None:
    replies = {
        m: fixture(f"bitcoind/{m}.json")
        for m in ("getblockchaininfo", "getmininginfo", "getblockstats")
    }
    # One path; the reply depends on the method, so script them in call order.
    server.set(
        "/",
        *(Reply(body=replies[m]) for m in ("getblockchaininfo", "getmininginfo", "getblockstats")),
    )
    config = BitcoindConfig(url=server.url("/"), username="rpc", password="secret")  # type: ignore[arg-type]
    feed = BitcoindFeed(config, client)
    readings = await feed.fetch()
    assert readings["difficulty"].value == 102289407543323.8
    assert readings["fees_btc_per_block"].value == pytest.approx(0.0654321)
    methods = [json.loads(body)["method"] for _, _, body in server.requests]
    assert methods == ["getblockchaininfo", "getmininginfo", "getblockstats"]
    assert json.loads(server.requests[2][2])["params"] == [872400, ["totalfee"]]
    # Wrong credentials: bitcoind answers 401, which is Fatal.
    server.set("/", Reply(401, b""))
    with pytest.raises(Fatal):
        await BitcoindFeed(config, client).fetch()
    # An RPC error comes back as HTTP 500 with a JSON body.
    server.set(
        "/",
        Reply(
            500,
            b'{"result": null, "error": {"code": -28, "message": "Loading block index"}, "id": 1}',
        ),
    )
    with pytest.raises(Unavailable, match="Loading block index"):
        await BitcoindFeed(config, client).fetch()


def test_subsidy_halvings() -> None:
    assert [block_subsidy_btc(h) for h in (0, 209_999, 210_000, 840_000, 6_930_000)] == [
        50.0,
        50.0,
        25.0,
        3.125,
        0.0,
    ]


async def test_ercot_newest_interval_and_plausibility(
    server: ReplayServer, client: httpx.AsyncClient
) -> None:
    server.set("/rtm", Reply(body=fixture("ercot/spp_node_zone_hub.json")))
    wall = datetime(2024, 8, 20, 23, 0, tzinfo=UTC)  # 18:00 CDT: interval HE18/3 ended 17:45
    clock = FakeClock()
    config = ErcotConfig(url=server.url("/rtm"), settlement_point="HB_SOUTH")
    feed = ErcotRtmFeed(config, client, clock=clock, wall_clock=lambda: wall)
    reading = (await feed.fetch())["power_price_usd_per_mwh"]
    assert reading.value == 1893.0 and reading.source == "ercot:HB_SOUTH"
    assert reading.observed_at == pytest.approx(clock.now - 15 * 60)
    assert "settlementPoint=HB_SOUTH" in server.requests[0][1]
    # The same data two hours later is stale.
    late = ErcotRtmFeed(config, client, wall_clock=lambda: wall.replace(hour=1, day=21))
    with pytest.raises(Unavailable, match="ended"):
        await late.fetch()
    absurd = fixture("ercot/spp_node_zone_hub.json").replace(b"1893.0", b"98765.0")
    server.set("/rtm", Reply(body=absurd))
    with pytest.raises(DriverError, match="floor and cap"):
        await ErcotRtmFeed(config, client, wall_clock=lambda: wall).fetch()


async def test_tariff_follows_the_site_time_zone() -> None:
    config = TariffConfig.model_validate(
        {
            "default_usd_per_mwh": 45,
            "periods": [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri"],
                    "start": "14:00",
                    "end": "20:00",
                    "usd_per_mwh": 180,
                },
                {"start": "00:00", "end": "06:00", "usd_per_mwh": 25},
            ],
        }
    )
    feed = TariffFeed(config, "America/Chicago")
    tuesday = datetime(2024, 8, 20, tzinfo=UTC)
    assert feed.price_at(tuesday.replace(hour=19)) == 180  # 14:00 CDT
    assert feed.price_at(tuesday.replace(hour=18, minute=59)) == 45  # 13:59 CDT
    assert feed.price_at(tuesday.replace(hour=10)) == 25  # 05:00 CDT
    assert feed.price_at(datetime(2024, 8, 24, 19, tzinfo=UTC)) == 45  # Saturday
    assert (await feed.fetch())["power_price_usd_per_mwh"].source == "tariff"
