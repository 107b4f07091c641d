"""Hindsight bounds of lagged decisions: the restricted optimum, the bounds' order and the CLI's --bounds."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import pytest

from scheduler.backtest.bounds import lagged_bounds, restricted_optimum_decisions
from scheduler.backtest.cli import add_arguments, run_backtest_command
from scheduler.backtest.engine import (
    SwitchingCosts,
    Trace,
    _classes,
    _hashprices,
    _settle,
    load_trace,
    optimum_decisions,
    run_backtest,
)
from scheduler.config.loading import load_config
from scheduler.config.schema import WattmuxConfig
from scheduler.policies.max_margin import MaxMarginPolicy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "drivers" / "market" / "data"
PRICES = DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv"
BTC = DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"
FLEETS = ROOT / "deploy" / "fleets"


def one_device(name: str) -> WattmuxConfig:
    config = load_config(FLEETS / f"{name}.toml")
    config.device_ranges[0].count = 1
    return config


@pytest.fixture(scope="module")
def spike_days() -> Trace:
    """2024-08-19..21: the 2024-08-20 evening spike, up to 4,857.82 USD/MWh."""
    return load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 21))


def test_restricted_optimum_spans_always_on_to_the_optimum(spike_days: Trace) -> None:
    config = one_device("s21")
    (cls,) = _classes(config.all_devices())
    hashprices = _hashprices(spike_days, config.economics.pool_fee)
    costs = SwitchingCosts()
    total = len(spike_days.intervals)
    everywhere = restricted_optimum_decisions(cls, spike_days, hashprices, costs, [True] * total)
    assert everywhere == optimum_decisions(cls, spike_days, hashprices, costs)
    assert not all(everywhere)
    nowhere = restricted_optimum_decisions(cls, spike_days, hashprices, costs, [False] * total)
    assert all(nowhere)
    # Allowed only in the second half: sleeps there, never in the first half.
    half = [t >= total // 2 for t in range(total)]
    restricted = restricted_optimum_decisions(cls, spike_days, hashprices, costs, half)
    assert all(restricted[: total // 2])

    def margin(decisions: list[bool]) -> float:
        return _settle("x", [(cls, decisions)], spike_days, hashprices, costs).margin_usd

    assert margin(nowhere) <= margin(restricted) <= margin(everywhere)


def test_bounds_are_ordered_and_above_lagged_policies(spike_days: Trace) -> None:
    config = one_device("s21")
    bounds = lagged_bounds(config, spike_days)["S21"]
    assert bounds["room_usd_per_device"] > 0
    assert 0 < bounds["hindsight_last_rt_above"] <= bounds["hindsight_last_rt_or_dam_above"] <= 1
    assert bounds["optimum_one_interval_late"] <= bounds["hindsight_last_rt_above"]
    assert bounds["optimum_started_late"] < 1  # the spike's first interval is worth something
    onset = bounds["onset"]
    assert onset["sleeps"] >= 0 and 0 <= onset["best_bin_hit_rate"] <= 1
    assert onset["best_bin_intervals"] == 0 or onset["best_bin_intervals"] >= 10
    # Neither max-margin (any sleep band >= 0) nor the naive threshold sleeps while the last price
    # is at or below break-even: the restricted hindsight optimum bounds both.
    for fraction in (0.0, 0.05, 0.14):
        policy = MaxMarginPolicy(
            switching="bands", sleep_band_fraction=fraction, wake_band_fraction=0.05
        )
        report = run_backtest(config, policy, spike_days, info="lagged")
        policy_captured = report.captured(report.policy)
        naive_captured = report.captured(report.naive)
        assert policy_captured is not None and naive_captured is not None
        assert policy_captured <= bounds["hindsight_last_rt_above"] + 1e-4
        assert naive_captured <= bounds["hindsight_last_rt_above"] + 1e-4


def test_cli_bounds_adds_a_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "report.json"
    args = parser.parse_args(
        [
            "--fleet",
            str(FLEETS / "s21xp.toml"),
            "--btc",
            str(BTC),
            "--start",
            "2024-08-19",
            "--end",
            "2024-08-21",
            "--bounds",
            "--quiet",
            "--json",
            str(out),
        ]
    )
    assert run_backtest_command(args) == 0
    document = json.loads(out.read_text())
    assert set(document["lagged_bounds"]) == {"S21 XP"}
    assert "lagged_bounds S21 XP:" in capsys.readouterr().out
