"""Cap-feasible baselines: merit order under the cap, the exact optimum over device classes."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path

import pytest

from scheduler.backtest import feasible
from scheduler.backtest.engine import (
    SwitchingCosts,
    _DeviceClass,
    _gains,
    _hashprices,
    _settle_counts,
    load_trace,
    run_backtest,
)
from scheduler.config.loading import load_config
from scheduler.policies.max_margin import MaxMarginPolicy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "drivers" / "market" / "data"
PRICES = DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv"
BTC = DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"
MIXED = ROOT / "deploy" / "fleets" / "mixed.toml"


def test_exact_optimum_over_classes_matches_brute_force() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    short = type(trace)(intervals=trace.intervals[76:81], days=trace.days[76:81])  # the spike
    classes = [_DeviceClass(104.0, 3068.0, 20.0, 2), _DeviceClass(200.0, 3500.0, 15.0, 1)]
    costs = SwitchingCosts(wake_seconds=300, switch_cost_usd=0.5)
    hashprices = _hashprices(short, 0.02)
    limit = [7000.0] * 5  # two of the three fit
    gains = [_gains(c, short, hashprices, costs) for c in classes]
    counts, value = feasible.optimum_counts(
        classes,
        [g[0] for g in gains],
        [g[1] for g in gains],
        [g[2] for g in gains],
        costs.switch_cost_usd,
        limit,
    )
    settled = _settle_counts(
        "dp", list(zip(classes, counts, strict=True)), short, hashprices, costs
    )
    assert settled.margin_usd == pytest.approx(value, abs=1e-9)
    per_interval = [(a, b) for a in range(3) for b in range(2) if a * 3048 + b * 3485 + 55 <= 7000]
    best = max(
        _settle_counts(
            "b",
            [(classes[0], [s[0] for s in seq]), (classes[1], [s[1] for s in seq])],
            short,
            hashprices,
            costs,
        ).margin_usd
        for seq in itertools.product(per_interval, repeat=5)
    )
    assert value == pytest.approx(best, abs=1e-9)


def test_merit_order_fills_the_cap_most_efficient_first() -> None:
    classes = [_DeviceClass(104.0, 3068.0, 20.0, 4), _DeviceClass(270.0, 3645.0, 15.0, 2)]
    counts = feasible.merit_counts(classes, [[True, True], [True, False]], [11_000.0, 11_000.0])
    # 11 kW: both S21 XP (2 x 3,630 over their sleep) then one S19j Pro; without the XPs, three.
    assert counts == [[1, 3], [2, 0]]


def test_mixed_fleet_under_its_cap_every_strategy_feasible() -> None:
    config = load_config(MIXED)
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 21))
    report = run_backtest(config, MaxMarginPolicy(), trace, info="realtime")
    doc = report.as_dict()
    assert doc["fleet"]["power_cap_kw"] == pytest.approx(0.7 * doc["fleet"]["nominal_kw"], 1e-4)
    assert doc["optimum"] == "exact" and doc["optimum_exact"] is True
    for name, strategy in doc["strategies"].items():
        assert strategy["cap_violations"] == 0, name
        assert max(
            getattr(report, name if name != "naive_threshold" else "naive").power_series_kw
        ) <= (config.site.power_cap_kw + 1e-6)
    s = doc["strategies"]
    assert s["optimum"]["margin_usd"] >= s["policy"]["margin_usd"] > s["always_on"]["margin_usd"]
    assert s["optimum"]["margin_usd"] >= s["naive_threshold"]["margin_usd"]
    assert 0.9 <= doc["curtailment_value_captured"] <= 1.0


def test_beyond_the_tractable_size_the_optimum_is_an_upper_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feasible, "MAX_STATES", 100)
    config = load_config(MIXED)
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    doc = run_backtest(config, MaxMarginPolicy(), trace, info="realtime").as_dict()
    assert doc["optimum"] == "upper_bound" and doc["optimum_exact"] is False
    assert doc["strategies"]["always_on"]["cap_violations"] == 0
    assert doc["strategies"]["optimum"]["cap_violations"] > 0  # the bound ignores the cap
