"""ERCOT real-time settlement point prices (public report NP6-905-CD) as the live power price.

The report answers ``{"fields": [{"name": ...}, ...], "data": [[...], ...]}``
with one row per settlement point and 15-minute interval (``deliveryDate``,
``deliveryHour`` hour-ending 1..24, ``deliveryInterval`` 1..4,
``settlementPointPrice``).  The newest interval of the configured point is
used; a price outside ERCOT's offer floor and cap, or an interval that ended
more than ``max_age_seconds`` ago, is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from drivers.backoff import Backoff
from drivers.base import MarketFeed
from drivers.errors import MalformedReply, Unavailable
from drivers.market.http import JsonEndpoint, finite_number
from drivers.market.registry import FeedContext, MarketPlugin
from drivers.secrets import MaskedUrl
from scheduler.core.model import Reading

ERCOT_ZONE = ZoneInfo("America/Chicago")
ERCOT_FLOOR_USD_PER_MWH = -251.0
ERCOT_CAP_USD_PER_MWH = 5000.0


class ErcotConfig(BaseModel):
    """[[market]] driver = "ercot-rtm": ERCOT's public real-time settlement point prices."""

    model_config = ConfigDict(extra="forbid")

    driver: Literal["ercot-rtm"] = "ercot-rtm"
    url: MaskedUrl = Field(
        "https://api.ercot.com/api/public-reports/np6-905-cd/spp_node_zone_hub",
        description="report endpoint",
    )
    settlement_point: str = Field("HB_SOUTH", pattern=r"^[A-Z0-9_]{2,32}$")
    subscription_key: SecretStr | None = Field(None, description="Ocp-Apim-Subscription-Key")
    bearer_token: SecretStr | None = Field(None, description="ID token for the public API")
    max_age_seconds: float = Field(1800.0, gt=0, description="newest interval may be this old")
    floor_usd_per_mwh: float = ERCOT_FLOOR_USD_PER_MWH
    cap_usd_per_mwh: float = ERCOT_CAP_USD_PER_MWH
    timeout_seconds: float = Field(10.0, gt=0, le=60)


def interval_end(delivery_date: str, hour_ending: int, interval: int) -> datetime:
    """Wall-clock end of an ERCOT interval (hour-ending 1..24, interval 1..4), tz-aware."""
    day = date.fromisoformat(delivery_date)
    if not (1 <= hour_ending <= 24 and 1 <= interval <= 4):
        raise ValueError(f"hour {hour_ending} interval {interval}")
    start = datetime(day.year, day.month, day.day, tzinfo=ERCOT_ZONE)
    local = start + timedelta(hours=hour_ending - 1, minutes=15 * interval)
    # Arithmetic in UTC so that DST days keep 15-minute steps.
    return (start.astimezone(UTC) + (local - start)).astimezone(ERCOT_ZONE)


class ErcotRtmFeed:
    """MarketFeed for ``power_price_usd_per_mwh`` from ERCOT's real-time market."""

    def __init__(
        self,
        config: ErcotConfig,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        name: str = "ercot-rtm",
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._wall = wall_clock
        self.endpoint = JsonEndpoint(
            name,
            client,
            timeout_seconds=config.timeout_seconds,
            backoff=Backoff(5.0, 600.0),
            clock=clock,
        )

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.config.subscription_key is not None:
            headers["Ocp-Apim-Subscription-Key"] = self.config.subscription_key.get_secret_value()
        if self.config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.config.bearer_token.get_secret_value()}"
        return headers

    async def fetch(self) -> dict[str, Reading]:
        """The newest interval's price at the configured settlement point."""
        today = self._wall().astimezone(ERCOT_ZONE).date()
        params = {
            "settlementPoint": self.config.settlement_point,
            "deliveryDateFrom": (today - timedelta(days=1)).isoformat(),
            "deliveryDateTo": today.isoformat(),
        }
        body = await self.endpoint.request(
            "GET", self.config.url, params=params, headers=self._headers()
        )
        end, price = self._newest(body)
        age = (self._wall() - end).total_seconds()
        if age > self.config.max_age_seconds:
            raise Unavailable(self.name, f"newest interval ended {age:.0f} s ago")
        if not self.config.floor_usd_per_mwh <= price <= self.config.cap_usd_per_mwh:
            raise MalformedReply(self.name, f"{price} USD/MWh outside ERCOT's floor and cap")
        observed = self._clock() - max(0.0, age)
        return {
            "power_price_usd_per_mwh": Reading(
                price, observed, f"ercot:{self.config.settlement_point}"
            )
        }

    def _newest(self, body: Any) -> tuple[datetime, float]:
        try:
            names = [f["name"] for f in body["fields"]]
            col = {
                n: names.index(n)
                for n in (
                    "deliveryDate",
                    "deliveryHour",
                    "deliveryInterval",
                    "settlementPoint",
                    "settlementPointPrice",
                )
            }
            rows = [
                r for r in body["data"] if r[col["settlementPoint"]] == self.config.settlement_point
            ]
            if not rows:
                raise MalformedReply(self.name, f"no rows for {self.config.settlement_point}")
            newest = max(
                rows,
                key=lambda r: (
                    r[col["deliveryDate"]],
                    int(r[col["deliveryHour"]]),
                    int(r[col["deliveryInterval"]]),
                ),
            )
            end = interval_end(
                newest[col["deliveryDate"]],
                int(newest[col["deliveryHour"]]),
                int(newest[col["deliveryInterval"]]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MalformedReply(self.name, f"unexpected shape: {exc!r}") from exc
        return end, finite_number(self.name, newest[col["settlementPointPrice"]], "price")


def _feeds(options: ErcotConfig, context: FeedContext) -> list[MarketFeed]:
    return [ErcotRtmFeed(options, context.need_http("ercot-rtm"), clock=context.clock)]


PLUGINS = (MarketPlugin(tag="ercot-rtm", options=ErcotConfig, factory=_feeds),)
