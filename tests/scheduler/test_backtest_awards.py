"""Ancillary-service awards settled on a backtest: capacity revenue, energy forgone, the CLI.

The award prices here are test inputs, not published clearing prices (none are shipped).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backtest.awards import load_award_prices, settle_award
from scheduler.backtest.engine import BacktestError, load_trace, run_backtest
from scheduler.policies.breakeven import BreakevenPolicy
from tests.scheduler.test_backtest import BTC, FLEETS, PRICES, one_device_fleet

DAY = date(2024, 8, 20)


def award_csv(tmp_path: Path, price: float, hours: int = 24) -> Path:
    start = datetime(2024, 8, 20, 5, 0, tzinfo=UTC)  # 00:00 CDT
    rows = [f"{(start + timedelta(minutes=15 * i)).isoformat()},{price}" for i in range(hours * 4)]
    path = tmp_path / "award.csv"
    path.write_text("interval_start,usd_per_mw_h\n" + "\n".join(rows) + "\n")
    return path


def test_capacity_revenue_and_the_energy_forgone_where_the_site_would_have_slept(
    tmp_path: Path,
) -> None:
    trace = load_trace(PRICES, BTC, DAY, DAY)
    report = run_backtest(one_device_fleet("s21"), BreakevenPolicy(), trace, info="realtime")
    prices = load_award_prices(award_csv(tmp_path, 10.0))
    award_mw = 0.0035  # the S21's full power
    settled = settle_award(report, award_mw, prices)
    assert settled.priced_intervals == 96
    always_on = settled.strategies["always_on"]
    assert always_on.capacity_revenue_usd == pytest.approx(award_mw * 10.0 * 24)
    assert always_on.short_intervals == 0 and always_on.energy_forgone_usd == 0.0
    policy = settled.strategies["policy"]
    slept = sum(1 for kw in report.policy.power_series_kw if kw < 3.5)
    assert policy.short_intervals == slept
    assert (policy.energy_forgone_usd > 0) == (slept > 0)
    assert policy.margin_with_award_usd == pytest.approx(
        report.policy.margin_usd + policy.capacity_revenue_usd - policy.energy_forgone_usd
    )


def test_bad_award_inputs_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("interval_start,usd_per_mw_h\n2024-08-20T00:05:00-05:00,3\n")
    with pytest.raises(BacktestError, match="15-minute"):
        load_award_prices(bad)
    bad.write_text("interval_start,usd_per_mw_h\n2024-08-20T00:00:00,3\n")
    with pytest.raises(BacktestError, match="UTC offset"):
        load_award_prices(bad)
    bad.write_text("start,price\n")
    with pytest.raises(BacktestError, match="needs columns"):
        load_award_prices(bad)
    trace = load_trace(PRICES, BTC, DAY, DAY)
    report = run_backtest(one_device_fleet("s21"), BreakevenPolicy(), trace, info="realtime")
    with pytest.raises(BacktestError, match="> 0"):
        settle_award(report, 0.0, load_award_prices(award_csv(tmp_path, 1.0)))


@pytest.mark.system
def test_cli_settles_the_award(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    base = [
        sys.executable, "-m", "scheduler.cli.main", "backtest", "--fleet",
        str(FLEETS / "s21.toml"), "--prices", str(PRICES), "--btc", str(BTC),
        "--start", "2024-08-20", "--end", "2024-08-20", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(
        [*base, "--award-mw", "0.2", "--award-prices", str(award_csv(tmp_path, 8.0)),
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    award = json.loads(out.read_text())["award"]
    assert award["award_mw"] == 0.2 and award["priced_intervals"] == 96
    assert award["strategies"]["always_on"]["capacity_revenue_usd"] == pytest.approx(0.2 * 8 * 24)
    assert "capacity_usd" in result.stdout
    alone = subprocess.run(
        [*base, "--award-mw", "1"], capture_output=True, text=True, timeout=120, check=False
    )
    assert alone.returncode == 2 and "go together" in alone.stderr
