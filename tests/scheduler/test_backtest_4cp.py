"""The 4CP settlement of a backtest: tags, charges and savings; the interval file's checks; the CLI.

The interval times here are test inputs chosen inside the schedule's 4CP
window, not ERCOT's published 4CP intervals (none are shipped).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from scheduler.backtest.engine import BacktestError, load_trace, run_backtest
from scheduler.backtest.four_cp import load_4cp_csv, settle_4cp
from scheduler.policies.schedule import SchedulePolicy
from tests.scheduler.test_backtest import BTC, FLEETS, PRICES, one_device_fleet

# Tuesday 2024-08-20 17:00 CDT, inside the schedule's ERCOT 4CP window (weekdays 15:30-18:00).
PEAK = "2024-08-20T17:00:00-05:00"
RATE = 50.0  # USD per kW-year


def write_csv(tmp_path: Path, *lines: str, header: str = "interval_start") -> Path:
    path = tmp_path / "cp.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_sleeping_in_the_4cp_window_saves_the_transmission_charge(tmp_path: Path) -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 21))
    fleet = one_device_fleet("s21")
    policy = SchedulePolicy([], timezone="America/Chicago", ercot_4cp=True)
    report = run_backtest(fleet, policy, trace, info="realtime")
    intervals = load_4cp_csv(write_csv(tmp_path, PEAK))
    assert intervals == (datetime(2024, 8, 20, 22, 0, tzinfo=UTC),)
    settled = settle_4cp(report, intervals, RATE)
    always_on = settled.strategies["always_on"]
    scheduled = settled.strategies["policy"]
    assert always_on.tag_kw == pytest.approx(3.5)  # one S21 mining at stock power
    assert always_on.charge_usd == pytest.approx(3.5 * RATE)
    assert scheduled.tag_kw == pytest.approx(0.015)  # asleep through the window
    assert scheduled.savings_usd == pytest.approx((3.5 - 0.015) * RATE)
    assert scheduled.margin_after_4cp_usd == pytest.approx(report.policy.margin_usd - 0.015 * RATE)
    document = settled.as_dict()
    assert document["intervals_utc"] == ["2024-08-20T22:00Z"]
    assert set(document["strategies"]) == {"policy", "always_on", "naive_threshold", "optimum"}
    assert document["strategies"]["always_on"]["savings_vs_always_on_usd"] == 0.0


def test_the_tag_is_the_mean_over_the_intervals(tmp_path: Path) -> None:
    trace = load_trace(PRICES, BTC, date(2024, 7, 30), date(2024, 8, 21))
    report = run_backtest(
        one_device_fleet("s21"),
        SchedulePolicy([], timezone="America/Chicago", ercot_4cp=True),
        trace,
        info="realtime",
    )
    # One interval the schedule sleeps through, one at 03:00 it mines through.
    intervals = load_4cp_csv(write_csv(tmp_path, PEAK, "2024-07-31T03:00:00-05:00"))
    settled = settle_4cp(report, intervals, RATE)
    assert settled.strategies["policy"].kw == pytest.approx((3.5, 0.015))  # July first
    assert settled.strategies["policy"].tag_kw == pytest.approx((3.5 + 0.015) / 2)


@pytest.mark.parametrize(
    ("lines", "header", "message"),
    [
        (["2024-08-20T17:00:00"], "interval_start", "no UTC offset"),
        (["2024-08-20T17:05:00-05:00"], "interval_start", "15-minute"),
        (["yesterday"], "interval_start", "not an ISO 8601"),
        ([PEAK, "2024-08-21T16:45:00-05:00"], "interval_start", "one per month"),
        ([PEAK], "start", "interval_start"),
        ([], "interval_start", "interval_start"),
    ],
)
def test_bad_interval_files_are_named(
    tmp_path: Path, lines: list[str], header: str, message: str
) -> None:
    with pytest.raises(BacktestError, match=message):
        load_4cp_csv(write_csv(tmp_path, *lines, header=header))


def test_intervals_outside_the_trace_and_bad_rates_are_refused(tmp_path: Path) -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 19), date(2024, 8, 19))
    report = run_backtest(one_device_fleet("s21"), SchedulePolicy([]), trace, info="realtime")
    intervals = load_4cp_csv(write_csv(tmp_path, PEAK))
    with pytest.raises(BacktestError, match="outside the trace: 2024-08-20T22:00Z"):
        settle_4cp(report, intervals, RATE)
    with pytest.raises(BacktestError, match="rate"):
        settle_4cp(report, intervals, float("nan"))


def run_cli(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
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
            "2024-08-20",
            "--end",
            "2024-08-20",
            "--policy",
            "schedule",
            "--quiet",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.system
def test_cli_reports_each_strategy_4cp_charge(tmp_path: Path) -> None:
    cp = write_csv(tmp_path, PEAK)
    out = tmp_path / "report.json"
    result = run_cli("--4cp-rate", str(RATE), "--4cp-intervals", str(cp), "--json", str(out))
    assert result.returncode == 0, result.stderr
    four_cp = json.loads(out.read_text())["four_cp"]
    assert four_cp["rate_usd_per_kw_year"] == RATE
    always_on = four_cp["strategies"]["always_on"]
    assert always_on["tag_kw"] == pytest.approx(350.0)  # 100 S21 at 3.5 kW
    assert "savings_usd" in result.stdout and "4cp" in result.stdout
    alone = run_cli("--4cp-rate", "50")
    assert alone.returncode == 2 and "go together" in alone.stderr
    outside = run_cli(
        "--4cp-rate", "50", "--4cp-intervals", str(write_csv(tmp_path, "2024-06-03T16:00:00-05:00"))
    )
    assert outside.returncode == 2 and "outside the trace" in outside.stderr
