"""Builders for snapshots used by policy and guard tests."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.core.model import (
    Device,
    DeviceStatus,
    MarketState,
    Reading,
    Sample,
    Snapshot,
    Workload,
)
from tests.fakes import asic

# 2024-08-20, the worked example of the shared data README.
DIFFICULTY = 86_871_474_313_762.0
BTC_USD = 59_013.80


def device(device_id: str, model: str = "S21") -> Device:
    return asic(device_id, model, pools=("main", "backup"))


def market(price_usd_per_mwh: float | None, observed_at: float = 100.0) -> MarketState:
    def reading(value: float) -> Reading:
        return Reading(value, observed_at, "test")

    return MarketState(
        btc_price_usd=reading(BTC_USD),
        difficulty=reading(DIFFICULTY),
        block_subsidy_btc=reading(3.125),
        fees_btc_per_block=reading(0.0),
        power_price_usd_per_mwh=None if price_usd_per_mwh is None else reading(price_usd_per_mwh),
    )


def snapshot(
    devices: list[Device],
    price_usd_per_mwh: float | None,
    current: dict[str, Workload] | None = None,
    *,
    now: float = 100.0,
    temperatures: dict[str, float] | None = None,
    unreachable: frozenset[str] = frozenset(),
    market_state: MarketState | None = None,
) -> Snapshot:
    current = current if current is not None else {d.id: Workload.mine("main") for d in devices}
    temperatures = temperatures or {}
    samples = {
        d.id: Sample(
            device_id=d.id,
            observed_at=now,
            workload=current[d.id],
            power_w=d.nominal_power_w,
            hashrate_hs=d.nominal_hashrate_hs,
            temperature_c=temperatures.get(d.id, 60.0),
        )
        for d in devices
        if d.id in current and d.id not in unreachable
    }
    return Snapshot(
        now=now,
        wall=datetime(2024, 8, 20, 19, 30, tzinfo=UTC),
        devices={d.id: d for d in devices},
        samples=samples,
        status={d.id: DeviceStatus(reachable=d.id not in unreachable) for d in devices},
        market=market_state or market(price_usd_per_mwh),
        current={d: w for d, w in current.items() if d not in unreachable},
    )
