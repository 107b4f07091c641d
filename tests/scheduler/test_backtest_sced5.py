"""``--info sced5``: a decision acts 5 minutes into its interval; naive and optimum get the same model."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pytest

from scheduler.backtest import feasible
from scheduler.backtest.engine import (
    SwitchingCosts,
    _classes,
    _DeviceClass,
    _gains,
    _hashprices,
    _settle,
    _settle_counts,
    carry_fraction,
    load_trace,
    optimum_decisions,
    run_backtest,
)
from scheduler.config.loading import load_config
from scheduler.policies.breakeven import BreakevenPolicy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "drivers" / "market" / "data"
PRICES = DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv"
BTC = DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"
FLEETS = ROOT / "deploy" / "fleets"


def _one(name: str):  # type: ignore[no-untyped-def]
    config = load_config(FLEETS / f"{name}.toml")
    config.device_ranges[0].count = 1
    return config


def test_sced5_sits_between_realtime_and_lagged_and_the_policy_settles_like_naive() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 21))
    reports = {
        info: run_backtest(_one("s21"), BreakevenPolicy(0.0), trace, info=info)
        for info in ("realtime", "sced5", "lagged")
    }
    margins = {info: r.policy.margin_usd for info, r in reports.items()}
    assert margins["realtime"] > margins["sced5"] > margins["lagged"]
    sced5 = reports["sced5"]
    # breakeven at 0 hysteresis decides as the naive threshold: same model, same money.
    assert sced5.policy.margin_usd == pytest.approx(sced5.naive.margin_usd, abs=1e-9)
    # The optimum also acts 5 minutes late: below the realtime optimum, still above every strategy.
    assert sced5.optimum.margin_usd < reports["realtime"].optimum.margin_usd
    assert sced5.optimum.margin_usd >= sced5.policy.margin_usd
    # The first interval of the first sleep draws a third at full power.
    series = sced5.policy.power_series_kw
    first = next(i for i, kw in enumerate(series) if kw < 3.5)
    assert series[first] == pytest.approx((3.5 + 2 * 0.015) / 3)
    assert sced5.as_dict()["info"] == "sced5"


def test_sced5_optimum_of_one_device_matches_brute_force() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    short = type(trace)(intervals=trace.intervals[72:84], days=trace.days[72:84])
    costs = SwitchingCosts(wake_seconds=300, switch_cost_usd=0.05)
    (cls,) = _classes(_one("s19jpro").all_devices())
    hashprices = _hashprices(short, 0.02)
    carry = carry_fraction("sced5")
    decisions = optimum_decisions(cls, short, hashprices, costs, carry=carry)
    dp = _settle("dp", [(cls, decisions)], short, hashprices, costs, carry)
    best = max(
        _settle(
            "b", [(cls, [bool(m >> i & 1) for i in range(12)])], short, hashprices, costs, carry
        ).margin_usd
        for m in range(1 << 12)
    )
    assert dp.margin_usd == pytest.approx(best, abs=1e-9)


def test_sced5_optimum_over_classes_matches_brute_force() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    short = type(trace)(intervals=trace.intervals[76:81], days=trace.days[76:81])
    classes = [_DeviceClass(104.0, 3068.0, 20.0, 2), _DeviceClass(200.0, 3500.0, 15.0, 1)]
    costs = SwitchingCosts(wake_seconds=300, switch_cost_usd=0.5)
    hashprices = _hashprices(short, 0.02)
    carry = carry_fraction("sced5")
    gains = [_gains(c, short, hashprices, costs) for c in classes]
    counts, value = feasible.optimum_counts(
        classes,
        [g[0] for g in gains],
        [g[1] for g in gains],
        [g[2] for g in gains],
        costs.switch_cost_usd,
        [7000.0] * 5,
        carry,
    )
    pairs = list(zip(classes, counts, strict=True))
    settled = _settle_counts("dp", pairs, short, hashprices, costs, carry)
    assert settled.margin_usd == pytest.approx(value, abs=1e-9)
    fits = [(a, b) for a in range(3) for b in range(2) if a * 3048 + b * 3485 + 55 <= 7000]
    best = max(
        _settle_counts(
            "b",
            [(classes[0], [s[0] for s in seq]), (classes[1], [s[1] for s in seq])],
            short,
            hashprices,
            costs,
            carry,
        ).margin_usd
        for seq in itertools.product(fits, repeat=5)
    )
    assert value == pytest.approx(best, abs=1e-9)
