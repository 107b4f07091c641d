"""The market feed seam: which feed serves which ``driver`` tag of a ``[[market]]`` entry.

Each feed module declares its entries (``PLUGINS = (MarketPlugin(...),)``): the
tag, its options model (``driver: Literal[tag]``) and a factory that turns one
validated ``[[market]]`` entry into the feeds it brings (the ERCOT replay brings
the BTC days it covers too).  Built-ins are the modules of ``drivers.market``;
installed packages add feeds through the entry point group ``wattmux.market_feeds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from drivers.base import MarketFeed
from drivers.registry import Plugin, Registry


class MarketSettings(Protocol):
    """What every feed's options model provides."""

    @property
    def driver(self) -> str:
        """The tag of the feed entry."""
        ...


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What a feed factory may use besides its options: the clock, the site zone, HTTP."""

    clock: Callable[[], float] = time.monotonic
    timezone: str = "UTC"
    http: httpx.AsyncClient | None = field(default=None)
    """The shared client of live HTTP feeds (owned and closed by the caller)."""

    def need_http(self, tag: str) -> httpx.AsyncClient:
        """The HTTP client, or ValueError when the caller gave none."""
        if self.http is None:
            raise ValueError(f"market driver {tag!r} needs an HTTP client")
        return self.http


class FeedFactory(Protocol):
    """Builds the feeds of one ``[[market]]`` entry."""

    def __call__(self, options: Any, context: FeedContext) -> list[MarketFeed]:
        """The feeds ``options`` asks for."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketPlugin(Plugin[FeedFactory]):
    """One market feed: tag, options model, factory."""


MARKET_FEEDS: Registry[MarketPlugin] = Registry(
    "market driver", "wattmux.market_feeds", MarketPlugin, ("drivers.market",)
)


def build_market_feeds(entries: Iterable[MarketSettings], context: FeedContext) -> list[MarketFeed]:
    """The feeds of every entry, in order."""
    feeds: list[MarketFeed] = []
    for entry in entries:
        feeds.extend(MARKET_FEEDS.get(entry.driver).factory(entry, context))
    return feeds
