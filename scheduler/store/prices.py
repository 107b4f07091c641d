"""The last valid pushed market price (MQTT) per input, kept so that a restart does not forget it.

One row per market input (``power_price_usd_per_mwh``): the value, its source,
the settlement interval the message stated and the wall time it arrived.  The
daemon writes it on every accepted price and reads it back at start; the price
is used again only while its interval has not ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from scheduler.store.sqlite import Database, from_text, to_text


@dataclass(frozen=True, slots=True)
class PushedPrice:
    """A pushed market value with the interval it is valid for and when it arrived (wall time)."""

    input: str
    value: float
    source: str
    interval_start: datetime
    interval_end: datetime
    received_at: datetime


class PriceStore(Database):
    """The ``pushed_prices`` table: the latest accepted pushed value of each market input."""

    def put_pushed_price(self, price: PushedPrice) -> None:
        """Durably replace the stored value of price.input."""
        with self._write() as db:
            db.execute(
                "INSERT INTO pushed_prices (input, value, source, interval_start, interval_end,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (input) DO UPDATE SET"
                " value = excluded.value, source = excluded.source,"
                " interval_start = excluded.interval_start,"
                " interval_end = excluded.interval_end, received_at = excluded.received_at",
                (
                    price.input,
                    price.value,
                    price.source,
                    to_text(price.interval_start),
                    to_text(price.interval_end),
                    to_text(price.received_at),
                ),
            )

    def pushed_price(self, name: str) -> PushedPrice | None:
        """The stored value of one market input, None when none was kept."""
        rows = self._read(
            "SELECT input, value, source, interval_start, interval_end, received_at"
            " FROM pushed_prices WHERE input = ?",
            (name,),
        )
        if not rows:
            return None
        row = rows[0]
        return PushedPrice(
            input=row["input"],
            value=float(row["value"]),
            source=row["source"],
            interval_start=from_text(row["interval_start"]),
            interval_end=from_text(row["interval_end"]),
            received_at=from_text(row["received_at"]),
        )
