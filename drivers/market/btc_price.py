"""BTC price as the median of several public sources (mempool.space, Coinbase, Kraken, CoinGecko).

Each source is polled at most every ``interval_seconds``; a value is used while
younger than ``max_age_seconds``.  A value is plausible when finite, inside
``[min_usd, max_usd]`` and, once a good median exists, within ``band_fraction``
of it.  ``fetch`` returns the median of the fresh plausible values and raises
``Unavailable`` when fewer than ``min_sources`` are fresh.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from drivers.backoff import Backoff
from drivers.base import MarketFeed
from drivers.errors import DriverError, MalformedReply, Unavailable
from drivers.market.http import JsonEndpoint, finite_number
from drivers.market.registry import FeedContext, MarketPlugin
from scheduler.core.model import Reading

log = logging.getLogger(__name__)


def _mempool(body: Any) -> Any:
    return body["USD"]


def _coinbase(body: Any) -> Any:
    return body["data"]["amount"]


def _kraken(body: Any) -> Any:
    if body.get("error"):
        raise KeyError(f"kraken error {body['error']}")
    (ticker,) = body["result"].values()
    return ticker["c"][0]  # last trade closed: [price, lot volume]


def _coingecko(body: Any) -> Any:
    return body["bitcoin"]["usd"]


# source -> (default URL, how to find the USD price in the JSON body)
SOURCES: Mapping[str, tuple[str, Callable[[Any], Any]]] = MappingProxyType(
    {
        "mempool": ("https://mempool.space/api/v1/prices", _mempool),
        "coinbase": ("https://api.coinbase.com/v2/prices/BTC-USD/spot", _coinbase),
        "kraken": ("https://api.kraken.com/0/public/Ticker?pair=XBTUSD", _kraken),
        "coingecko": (
            "https://api.coingecko.com/api/v3/simple/price?ids=bitcoin&vs_currencies=usd",
            _coingecko,
        ),
    }
)


SourceName = Literal["mempool", "coinbase", "kraken", "coingecko"]


def _default_sources() -> dict[SourceName, str | None]:
    return {"mempool": None, "coinbase": None, "kraken": None}


class BtcPriceConfig(BaseModel):
    """[[market]] driver = "btc-price": the median of several BTC/USD sources."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["btc-price"] = "btc-price"
    sources: dict[SourceName, str | None] = Field(
        default_factory=_default_sources,
        description="source -> URL (null: the public default)",
    )
    interval_seconds: float = Field(30.0, gt=0, description="poll each source at most this often")
    max_age_seconds: float = Field(300.0, gt=0, description="older values are not used")
    min_sources: int = Field(1, ge=1, description="fresh sources needed for a price")
    band_fraction: float = Field(0.2, gt=0, le=1, description="allowed move from the last median")
    min_usd: float = Field(1_000.0, gt=0)
    max_usd: float = Field(10_000_000.0, gt=0)
    timeout_seconds: float = Field(5.0, gt=0, le=60)


@dataclass
class _Source:
    name: str
    url: str
    extract: Callable[[Any], Any]
    endpoint: JsonEndpoint
    value: float | None = None
    observed_at: float = float("-inf")
    attempted_at: float = float("-inf")
    up: bool = True


class BtcPriceFeed:
    """MarketFeed for ``btc_price_usd``: median of the fresh, plausible sources."""

    def __init__(
        self,
        config: BtcPriceConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "btc-price",
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self.sources = [
            _Source(
                source,
                url or SOURCES[source][0],
                SOURCES[source][1],
                JsonEndpoint(
                    f"{name}.{source}",
                    client,
                    timeout_seconds=config.timeout_seconds,
                    backoff=Backoff(config.interval_seconds, 3600.0),
                    clock=clock,
                ),
            )
            for source, url in config.sources.items()
        ]
        self.last_good: float | None = None
        self.rejected: dict[str, int] = {}

    async def _poll(self, source: _Source, now: float) -> None:
        if now - source.attempted_at < self.config.interval_seconds:
            return
        source.attempted_at = now
        try:
            body = await source.endpoint.request("GET", source.url)
            try:
                raw = source.extract(body)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                raise MalformedReply(source.endpoint.name, f"unexpected shape: {exc!r}") from exc
            value = finite_number(source.endpoint.name, raw, "price")
            self._check(source.endpoint.name, value)
        except DriverError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            if source.up:
                log.warning("%s down: %s", source.endpoint.name, exc.message)
            source.up = False
            return
        if not source.up:
            log.info("%s up again", source.endpoint.name)
        source.up = True
        source.value = value
        source.observed_at = self._clock()

    def _check(self, source: str, value: float) -> None:
        config = self.config
        if not config.min_usd <= value <= config.max_usd:
            raise MalformedReply(
                source, f"{value} USD outside [{config.min_usd}, {config.max_usd}]"
            )
        if self.last_good is not None and abs(value / self.last_good - 1) > config.band_fraction:
            raise MalformedReply(
                source, f"{value} USD is more than {config.band_fraction:.0%} from {self.last_good}"
            )

    async def fetch(self) -> dict[str, Reading]:
        """Poll the due sources concurrently; return the median of the fresh ones."""
        now = self._clock()
        async with asyncio.TaskGroup() as group:
            for source in self.sources:
                group.create_task(self._poll(source, now), name=f"{self.name}[{source.name}].poll")
        now = self._clock()
        fresh = [
            s
            for s in self.sources
            if s.value is not None and now - s.observed_at <= self.config.max_age_seconds
        ]
        if len(fresh) < self.config.min_sources:
            raise Unavailable(
                self.name, f"{len(fresh)} fresh source(s), need {self.config.min_sources}"
            )
        median = statistics.median(s.value for s in fresh if s.value is not None)
        self.last_good = median
        names = ",".join(s.name for s in fresh)
        oldest = min(s.observed_at for s in fresh)
        return {"btc_price_usd": Reading(median, oldest, f"median({names})")}

    def up(self) -> dict[str, bool]:
        """Whether each source's last poll succeeded."""
        return {s.name: s.up for s in self.sources}


def _feeds(options: BtcPriceConfig, context: FeedContext) -> list[MarketFeed]:
    return [BtcPriceFeed(options, context.need_http("btc-price"), clock=context.clock)]


PLUGINS = (MarketPlugin(tag="btc-price", options=BtcPriceConfig, factory=_feeds),)
