"""The backtest's BTC inputs: the UTC day's row, the subsidy switching at the halving block, fees."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from scheduler.backtest.engine import BacktestError, _hashprices, load_trace

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "drivers" / "market" / "data"
PRICES = DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv"
BTC = DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"


def _halving_files(tmp_path: Path, fees: bool = False) -> tuple[Path, Path]:
    """Local 2024-04-19 18:00..20:45 CDT (23:00..01:45 UTC): block 840,000 at 00:09:27 UTC."""
    prices = tmp_path / "prices.csv"
    lines = [
        "interval_start_local,hb_south_rtm_spp_usd_per_mwh,hb_south_dam_spp_usd_per_mwh,"
        "suspect_filled"
    ]
    for hour in (18, 19, 20):
        for minute in (0, 15, 30, 45):
            lines.append(f"2024-04-19 {hour:02d}:{minute:02d},20.0,25.0,0")
    prices.write_text("\n".join(lines) + "\n")
    btc = tmp_path / "btc.csv"
    header = "date_utc,btc_close_usd,difficulty,block_subsidy_btc"
    rows = [
        "2024-04-19,63818.01,86388558925171.28,6.25",
        "2024-04-20,64940.59,86388558925171.28,3.125",
    ]
    if fees:
        header += ",fees_btc_per_block"
        rows = [rows[0] + ",0.5", rows[1] + ",2.0"]
    btc.write_text("\n".join([header, *rows]) + "\n")
    return prices, btc


def test_an_evening_in_texas_uses_the_next_utc_days_row() -> None:
    trace = load_trace(PRICES, BTC, date(2024, 8, 20), date(2024, 8, 20))
    starts = [f"{i.start:%H:%M}" for i in trace.intervals]
    # 18:45 CDT is 23:45 UTC (2024-08-20); 19:00 CDT is 00:00 UTC on 2024-08-21.
    assert trace.days[starts.index("18:45")].date_utc == date(2024, 8, 20)
    assert trace.days[starts.index("19:00")].date_utc == date(2024, 8, 21)
    assert trace.days[-1].date_utc == date(2024, 8, 21)
    assert trace.days[0].date_utc == date(2024, 8, 20)


def test_the_subsidy_halves_at_the_halving_block_not_at_a_date(tmp_path: Path) -> None:
    prices, btc = _halving_files(tmp_path)
    trace = load_trace(prices, btc, fee_fraction=0.0)
    subsidies = [trace.reward(i)[0] for i in range(len(trace.intervals))]
    # 18:00..18:45 CDT: 2024-04-19 UTC, old subsidy.  19:00-19:15 spans 00:09:27 UTC.
    assert subsidies[:4] == [6.25] * 4
    share_before = (9 * 60 + 27) / 900
    assert subsidies[4] == pytest.approx(6.25 * share_before + 3.125 * (1 - share_before))
    assert subsidies[5:] == [3.125] * 7
    hashprices = _hashprices(trace, 0.0)
    assert hashprices[3] > hashprices[4] > hashprices[5]


def test_fees_from_the_column_or_the_stated_fraction(tmp_path: Path) -> None:
    prices, btc = _halving_files(tmp_path, fees=True)
    trace = load_trace(prices, btc, fee_fraction=0.5)
    assert [trace.reward(i)[1] for i in (0, 11)] == [0.5, 2.0]  # the column wins
    assert trace.fees_source == "column"
    prices, btc = _halving_files(tmp_path)
    trace = load_trace(prices, btc, fee_fraction=0.02)
    subsidy, fees = trace.reward(11)
    assert subsidy == 3.125 and fees == pytest.approx(0.0625)
    assert trace.fees_source == "0.02 x subsidy"
    no_fees = _hashprices(load_trace(prices, btc, fee_fraction=0.0), 0.0)
    assert _hashprices(trace, 0.0)[11] == pytest.approx(no_fees[11] * 1.02)
    with pytest.raises(BacktestError, match="fee_fraction"):
        load_trace(prices, btc, fee_fraction=-0.1)
