"""Bitcoin network figures: difficulty, tip height, subsidy and fees per block.

Two feeds: ``MempoolNetworkFeed`` reads mempool.space's ``/api/v1/blocks`` (the
latest blocks with their difficulty and ``extras.totalFees`` in satoshi);
``BitcoindFeed`` asks a site's own node over JSON-RPC (``getblockchaininfo``,
``getmininginfo`` and ``getblockstats`` for the tip's total fee).  Both derive
the block subsidy from the tip height (halving every 210,000 blocks).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from drivers.backoff import Backoff
from drivers.base import MarketFeed
from drivers.errors import MalformedReply, Unavailable
from drivers.market.http import JsonEndpoint, finite_number
from drivers.market.registry import FeedContext, MarketPlugin
from drivers.secrets import MaskedUrl
from scheduler.core.model import Reading

SATOSHI_PER_BTC = 100_000_000
HALVING_INTERVAL_BLOCKS = 210_000
MAX_DIFFICULTY = 1e18  # far above anything plausible for decades
MAX_FEES_BTC_PER_BLOCK = 100.0


def block_subsidy_btc(height: int) -> float:
    """The block subsidy at a height: 50 BTC halved every 210,000 blocks (in whole satoshi)."""
    halvings = height // HALVING_INTERVAL_BLOCKS
    return (50 * SATOSHI_PER_BTC >> halvings) / SATOSHI_PER_BTC if halvings < 64 else 0.0


def _readings(
    source: str, height: Any, difficulty: Any, fees_btc: float | None, now: float
) -> dict[str, Reading]:
    """Validated readings, or MalformedReply naming what is implausible."""
    if isinstance(height, bool) or not isinstance(height, int) or not 0 < height < 10_000_000:
        raise MalformedReply(source, f"implausible tip height {height!r}")
    value = finite_number(source, difficulty, "difficulty")
    if not 1.0 <= value <= MAX_DIFFICULTY:
        raise MalformedReply(source, f"implausible difficulty {value!r}")
    readings = {
        "difficulty": Reading(value, now, source),
        "block_subsidy_btc": Reading(block_subsidy_btc(height), now, source),
    }
    if fees_btc is not None:
        if not 0.0 <= fees_btc <= MAX_FEES_BTC_PER_BLOCK:
            raise MalformedReply(source, f"implausible fees {fees_btc!r} BTC per block")
        readings["fees_btc_per_block"] = Reading(fees_btc, now, source)
    return readings


class MempoolNetworkConfig(BaseModel):
    """[[market]] driver = "mempool-network": difficulty, height and fees from mempool.space."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["mempool-network"] = "mempool-network"
    url: MaskedUrl = Field("https://mempool.space/api/v1/blocks", description="blocks endpoint")
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class MempoolNetworkFeed:
    """MarketFeed for difficulty, subsidy and mean fees of the latest blocks (mempool.space)."""

    def __init__(
        self,
        config: MempoolNetworkConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "mempool-network",
    ) -> None:
        self.name = name
        self.url = config.url
        self._clock = clock
        self.endpoint = JsonEndpoint(
            name, client, timeout_seconds=config.timeout_seconds, clock=clock
        )
        self.tip_height: int | None = None

    async def fetch(self) -> dict[str, Reading]:
        """Read the latest blocks; difficulty and height of the tip, fees averaged."""
        body = await self.endpoint.request("GET", self.url)
        try:
            blocks: Sequence[Any] = body if isinstance(body, list) and body else []
            if not blocks:
                raise MalformedReply(self.name, "expected a non-empty list of blocks")
            tip = max(blocks, key=lambda b: b["height"])
            fees_sat = [finite_number(self.name, b["extras"]["totalFees"], "fees") for b in blocks]
            height, difficulty = tip["height"], tip["difficulty"]
        except (KeyError, TypeError) as exc:
            raise MalformedReply(self.name, f"unexpected shape: {exc!r}") from exc
        readings = _readings(
            self.name,
            height,
            difficulty,
            statistics.fmean(fees_sat) / SATOSHI_PER_BTC,
            self._clock(),
        )
        self.tip_height = height
        return readings


class BitcoindConfig(BaseModel):
    """[[market]] driver = "bitcoind": the site's own node over JSON-RPC."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["bitcoind"] = "bitcoind"
    url: MaskedUrl = Field("http://127.0.0.1:8332/", description="RPC URL")
    username: str | None = None
    password: SecretStr | None = None
    fees: bool = Field(True, description="read the tip's total fee with getblockstats")
    timeout_seconds: float = Field(5.0, gt=0, le=60)


class BitcoindFeed:
    """MarketFeed for difficulty, subsidy and tip fees from bitcoind (getblockchaininfo & co)."""

    def __init__(
        self,
        config: BitcoindConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "bitcoind",
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self.endpoint = JsonEndpoint(
            name,
            client,
            timeout_seconds=config.timeout_seconds,
            backoff=Backoff(1.0, 60.0),
            clock=clock,
        )
        self._ids = itertools.count(1)
        self.tip_height: int | None = None

    async def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; an RPC error is Unavailable with bitcoind's message."""
        auth = None
        if self.config.username is not None and self.config.password is not None:
            auth = httpx.BasicAuth(self.config.username, self.config.password.get_secret_value())
        request_id = next(self._ids)
        body = await self.endpoint.request(
            "POST",
            self.config.url,
            json={"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)},
            auth=auth,
        )
        if not isinstance(body, dict) or "result" not in body:
            raise MalformedReply(self.name, f"{method}: not a JSON-RPC reply")
        if body.get("error"):
            raise Unavailable(self.name, f"{method}: {body['error']}")
        return body["result"]

    async def fetch(self) -> dict[str, Reading]:
        """Tip height and difficulty (refusing a node still in initial block download), fees."""
        chain = await self.call("getblockchaininfo")
        mining = await self.call("getmininginfo")
        try:
            if chain["initialblockdownload"]:
                raise Unavailable(self.name, "node is still in initial block download")
            height, difficulty = mining["blocks"], mining["difficulty"]
            fees_btc = None
            if self.config.fees:
                stats = await self.call("getblockstats", height, ["totalfee"])
                fees_btc = finite_number(self.name, stats["totalfee"], "totalfee") / SATOSHI_PER_BTC
        except (KeyError, TypeError) as exc:
            raise MalformedReply(self.name, f"unexpected shape: {exc!r}") from exc
        readings = _readings(self.name, height, difficulty, fees_btc, self._clock())
        self.tip_height = height
        return readings


def _mempool_feeds(options: MempoolNetworkConfig, context: FeedContext) -> list[MarketFeed]:
    http = context.need_http("mempool-network")
    return [MempoolNetworkFeed(options, http, clock=context.clock)]


def _bitcoind_feeds(options: BitcoindConfig, context: FeedContext) -> list[MarketFeed]:
    return [BitcoindFeed(options, context.need_http("bitcoind"), clock=context.clock)]


PLUGINS = (
    MarketPlugin(tag="mempool-network", options=MempoolNetworkConfig, factory=_mempool_feeds),
    MarketPlugin(tag="bitcoind", options=BitcoindConfig, factory=_bitcoind_feeds),
)
