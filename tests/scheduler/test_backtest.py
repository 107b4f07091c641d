"""The backtester on the shipped ERCOT and BTC records: baselines, the optimum, the CLI and max-margin's acceptance."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from scheduler.backtest.bounds import lagged_bounds
from scheduler.backtest.engine import (
    BacktestError,
    SwitchingCosts,
    _classes,
    _hashprices,
    _settle,
    load_trace,
    optimum_decisions,
    run_backtest,
)
from scheduler.config.loading import load_config
from scheduler.policies.breakeven import BreakevenPolicy
from scheduler.policies.max_margin import MaxMarginPolicy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "drivers" / "market" / "data"
PRICES = DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv"
BTC = DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"
FLEETS = ROOT / "deploy" / "fleets"
REALTIME_CAPTURED_FLOOR = {"s19jpro": 0.99, "s21": 0.99, "s21xp": 0.99}
LAGGED_CAPTURED_FLOOR = {"s19jpro": 0.88, "s21": 0.81, "s21xp": 0.77}


def one_device_fleet(name: str):  # type: ignore[no-untyped-def]
    config = load_config(FLEETS / f"{name}.toml")
    config.device_ranges[0].count = 1
    return config


@pytest.fixture(scope="module")
def full_trace():  # type: ignore[no-untyped-def]
    return load_trace(PRICES, BTC)


def test_spike_days_baselines_and_optimum_order() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 21))
    assert len(trace.intervals) == 288
    report = run_backtest(one_device_fleet("s21"), BreakevenPolicy(0.0), trace, info="realtime")
    doc = report.as_dict()
    s = doc["strategies"]
    # The 2024-08-20 evening spike (up to 4,857.82 USD/MWh) makes always-on lose against sleeping.
    assert (
        s["optimum"]["margin_usd"]
        > s["naive_threshold"]["margin_usd"]
        > s["always_on"]["margin_usd"]
    )
    assert s["optimum"]["margin_usd"] >= s["policy"]["margin_usd"]
    assert s["always_on"]["switches"] == 0 and s["always_on"]["energy_curtailed_mwh"] == 0
    assert s["policy"]["energy_curtailed_mwh"] > 0
    assert 0 < doc["curtailment_value_captured"] <= 1
    assert doc["optimum_exact"] is True and doc["cap_violations"] == 0


def test_optimum_matches_brute_force_on_a_short_trace() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    short = type(trace)(intervals=trace.intervals[72:84], days=trace.days[72:84])  # 18:00-21:00
    costs = SwitchingCosts(wake_seconds=300, switch_cost_usd=0.05)
    devices = one_device_fleet("s19jpro").all_devices()
    (cls,) = _classes(devices)
    hashprices = _hashprices(short, 0.02)
    dp = _settle(
        "dp", [(cls, optimum_decisions(cls, short, hashprices, costs))], short, hashprices, costs
    )
    best = max(
        _settle(
            "b", [(cls, [bool(mask >> i & 1) for i in range(12)])], short, hashprices, costs
        ).margin_usd
        for mask in range(1 << 12)
    )
    assert dp.margin_usd == pytest.approx(best, abs=1e-9)


def test_lagged_decisions_see_the_previous_interval() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    fleet = one_device_fleet("s21")
    lagged = run_backtest(fleet, BreakevenPolicy(0.0), trace, info="lagged")
    realtime = run_backtest(fleet, BreakevenPolicy(0.0), trace, info="realtime")
    assert realtime.policy.margin_usd > lagged.policy.margin_usd
    # Sleeping starts one interval later under lagged information.
    first_sleep = [
        next(i for i, kw in enumerate(r.policy.power_series_kw) if kw < 1.0)
        for r in (realtime, lagged)
    ]
    assert first_sleep[1] == first_sleep[0] + 1


def test_bad_inputs_are_named() -> None:
    with pytest.raises(BacktestError, match="no price intervals"):
        load_trace(PRICES, BTC, date(2030, 1, 1), None)
    with pytest.raises(BacktestError, match="wake_seconds"):
        SwitchingCosts(wake_seconds=1000)


@pytest.mark.parametrize("name", ["s19jpro", "s21", "s21xp"])
def test_max_margin_beats_always_on_and_naive(full_trace, name: str) -> None:  # type: ignore[no-untyped-def]
    fleet = one_device_fleet(name)
    realtime = run_backtest(fleet, MaxMarginPolicy(), full_trace, info="realtime")
    assert realtime.policy.margin_usd > realtime.naive.margin_usd > realtime.always_on.margin_usd
    # Cost-aware (default): 0.9909 / 0.9924 / 0.9945 measured (0.9893 / 0.9920 / 0.9937 while
    # the wake side used the mean length of every past run below break-even).
    assert realtime.captured(realtime.policy) >= REALTIME_CAPTURED_FLOOR[name]
    # The former fixed bands (chosen on this trace): 0.9913 / 0.9925 / 0.9945.
    fixed = run_backtest(fleet, MaxMarginPolicy(switching="bands"), full_trace, info="realtime")
    assert fixed.captured(fixed.policy) >= 0.99
    lagged_policy = MaxMarginPolicy(
        switching="bands", sleep_band_fraction=0.05, wake_band_fraction=0.05
    )
    lagged = run_backtest(fleet, lagged_policy, full_trace, info="lagged")
    assert lagged.naive.margin_usd > lagged.always_on.margin_usd
    assert lagged.policy.margin_usd > lagged.always_on.margin_usd
    # With the UTC day's BTC row and 2 % fees these fixed bands fall just under the naive
    # threshold on S21 XP (3,344.41 vs 3,344.66 USD per machine): see docs/backtest-matrix.md.
    # Measured (README): 0.8863 / 0.8111 / 0.7909.  The goal of 0.90 is not met: no policy
    # that sleeps only above break-even on the last price can pass hindsight_last_rt_above.
    lagged_captured = lagged.captured(lagged.policy)
    assert lagged_captured is not None and lagged_captured >= LAGGED_CAPTURED_FLOOR[name]
    bound = lagged_bounds(fleet, full_trace)[fleet.device_ranges[0].model]
    assert lagged_captured <= bound["hindsight_last_rt_above"] <= 0.95
    # Sleeping at a spike's onset on what lagged shows (an online estimate per bin) loses money.
    assert bound["onset"]["realised_captured"] <= 0 and bound["onset"]["best_bin_hit_rate"] < 0.5
    # A walk-forward learner of both decisions on what lagged shows, settled like the naive
    # threshold (measured, docs/backtest.md: no variant clears naive + 0.01 on all three fleets).
    learned = bound["walk_forward"]
    assert learned["naive"] == pytest.approx(lagged.captured(lagged.naive), abs=1e-4)
    assert len(learned) == 7 and all(0 < v < 1 for v in learned.values())


@pytest.mark.system
def test_cli_writes_json_and_shows_progress(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "backtest",
            "--fleet",
            str(FLEETS / "s21.toml"),
            "--prices",
            str(PRICES),
            "--btc",
            str(BTC),
            "--start",
            "2024-08-19",
            "--end",
            "2024-08-21",
            "--info",
            "realtime",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "backtest: 100%" in result.stderr
    doc = json.loads(out.read_text())
    assert doc["policy"] == "max-margin" and doc["fleet"]["devices"] == 100
    assert set(doc["strategies"]) == {"policy", "always_on", "naive_threshold", "optimum"}
    assert "curtailment_value_captured" in doc["strategies"]["policy"]
    assert "curtailment_value_captured" in result.stdout


@pytest.mark.system
def test_cli_unknown_policy_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "backtest",
            "--fleet",
            str(FLEETS / "s21.toml"),
            "--policy",
            "nope",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown policy 'nope'" in result.stderr


@pytest.mark.system
def test_plot_needs_matplotlib_or_writes_a_png(tmp_path: Path) -> None:
    png = tmp_path / "out.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.cli.main",
            "backtest",
            "--fleet",
            str(FLEETS / "s21.toml"),
            "--start",
            "2024-08-20",
            "--end",
            "2024-08-20",
            "--quiet",
            "--json",
            str(tmp_path / "r.json"),
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.returncode == 1
        assert "pip install 'wattmux[plot]'" in result.stderr
        assert (tmp_path / "r.json").exists()
    else:
        assert result.returncode == 0, result.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_binding_cap_is_respected_by_every_strategy() -> None:
    config = load_config(FLEETS / "s21.toml")
    config.site.power_cap_kw = 200.0  # 100 x 3.5 kW = 350 kW nominal
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    report = run_backtest(config, MaxMarginPolicy(), trace, info="realtime")
    doc = report.as_dict()
    assert doc["optimum_exact"] is True  # the DP over the class's counts under the cap
    assert doc["cap_violations"] == 0
    for name in ("always_on", "naive_threshold", "optimum"):
        assert doc["strategies"][name]["cap_violations"] == 0, name
    assert max(report.policy.power_series_kw) <= 200.0
    breakeven = run_backtest(config, BreakevenPolicy(0.0), trace, info="realtime")
    assert breakeven.cap_violations > 0  # breakeven ignores the cap; the Guard would correct it
