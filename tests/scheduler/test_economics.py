"""Economics against the worked example and the real BTC/ERCOT records in tests/data."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.core.economics import (
    MarketEconomics,
    breakeven_usd_per_mwh,
    btc_per_th_day,
    hashprice_usd_per_th_day,
    market_economics,
    option_economics,
    price_options,
)
from scheduler.core.model import (
    Device,
    MarketState,
    Reading,
    Snapshot,
    Workload,
    WorkloadKind,
)
from tests.fakes import asic

DATA = Path(__file__).resolve().parents[1] / "data"
BTC_FILE = (
    Path(__file__).resolve().parents[2]
    / "drivers"
    / "market"
    / "data"
    / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv"
)
ERCOT_DAY_FILE = DATA / "ercot_hb_south_2024-08-20.csv"

# The worked example of the data README, 2024-08-20.
DIFFICULTY = 86_871_474_313_762.0
BTC_CLOSE_USD = 59_013.80
SUBSIDY_BTC = 3.125


def make_device(model: str, device_id: str = "m1", pools: tuple[str, ...] = ("main",)) -> Device:
    return asic(device_id, model, pools=pools)


def make_snapshot(pool_fee: float = 0.0, **values: float | None) -> Snapshot:
    readings = {
        name: None if value is None else Reading(value, 10.0, "test")
        for name, value in values.items()
    }
    return Snapshot(
        now=12.0,
        wall=datetime(2024, 8, 20, tzinfo=UTC),
        devices={},
        samples={},
        status={},
        market=MarketState(**readings),
        pool_fee=pool_fee,
    )


def worked_market(**overrides: float | None) -> dict[str, float | None]:
    values: dict[str, float | None] = {
        "btc_price_usd": BTC_CLOSE_USD,
        "difficulty": DIFFICULTY,
        "block_subsidy_btc": SUBSIDY_BTC,
        "fees_btc_per_block": 0.0,
        "power_price_usd_per_mwh": 40.0,
    }
    values.update(overrides)
    return values


def worked_economics(power_price_usd_per_mwh: float) -> MarketEconomics:
    hashprice = hashprice_usd_per_th_day(DIFFICULTY, BTC_CLOSE_USD, SUBSIDY_BTC)
    return MarketEconomics(hashprice, power_price_usd_per_mwh)


# --- the worked example -------------------------------------------------------------------


def test_worked_example_btc_per_th_day() -> None:
    value = btc_per_th_day(DIFFICULTY, SUBSIDY_BTC)
    assert f"{value:.3e}" == "7.236e-07"
    assert round(value * 1e8, 1) == 72.4  # sats per TH/s per day


def test_worked_example_hashprice() -> None:
    value = hashprice_usd_per_th_day(DIFFICULTY, BTC_CLOSE_USD, SUBSIDY_BTC)
    assert round(value, 4) == 0.0427
    assert round(value * 1000, 1) == 42.7  # USD per PH/s per day


@pytest.mark.parametrize(
    ("model", "efficiency_j_per_th", "breakeven"),
    [("S19j Pro", 29.5, 60), ("S21", 17.5, 102), ("S21 Pro", 15.0, 119), ("S21 XP", 13.5, 132)],
)
def test_worked_example_breakevens(model: str, efficiency_j_per_th: float, breakeven: int) -> None:
    hashprice = hashprice_usd_per_th_day(DIFFICULTY, BTC_CLOSE_USD, SUBSIDY_BTC)
    assert round(breakeven_usd_per_mwh(hashprice, efficiency_j_per_th)) == breakeven
    device = make_device(model)
    assert device.efficiency_j_per_th == pytest.approx(efficiency_j_per_th)
    economics = MarketEconomics(hashprice, 0.0)
    assert round(economics.breakeven_usd_per_mwh(device)) == breakeven


# --- the whole BTC record -----------------------------------------------------------------


def half_unit_in_last_place(printed: str) -> float:
    """Half a unit of the last digit a number was printed with (1.23e-07 -> 0.005e-07)."""
    mantissa, _, exponent = printed.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def test_derived_columns_of_the_whole_btc_record() -> None:
    with BTC_FILE.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2847
    # The file prints btc_per_th_day as %.6e (7 significant digits) and the hashprice
    # rounded to 5 decimals with trailing zeros dropped; the check below allows exactly
    # that rounding (half a unit in the last printed place) plus float noise.
    hashprice_decimals = max(
        len(r["hashprice_usd_per_th_day_subsidy_only"].partition(".")[2]) for r in rows
    )
    assert hashprice_decimals == 5
    hashprice_tolerance = 0.5 * 10.0**-hashprice_decimals
    for row in rows:
        difficulty = float(row["difficulty"])
        subsidy = float(row["block_subsidy_btc"])
        printed_btc = row["btc_per_th_day_subsidy_only"]
        assert len(printed_btc.partition("e")[0].replace(".", "")) == 7, row
        btc = btc_per_th_day(difficulty, subsidy)
        assert abs(btc - float(printed_btc)) <= half_unit_in_last_place(printed_btc) * (1 + 1e-9), (
            row
        )
        hashprice = hashprice_usd_per_th_day(difficulty, float(row["btc_close_usd"]), subsidy)
        printed_hashprice = float(row["hashprice_usd_per_th_day_subsidy_only"])
        assert abs(hashprice - printed_hashprice) <= hashprice_tolerance * (1 + 1e-9), row


def test_eleven_intervals_above_s21_breakeven_on_2024_08_20() -> None:
    with BTC_FILE.open(newline="") as stream:
        (day,) = [r for r in csv.DictReader(stream) if r["date_utc"] == "2024-08-20"]
    hashprice = hashprice_usd_per_th_day(
        float(day["difficulty"]), float(day["btc_close_usd"]), float(day["block_subsidy_btc"])
    )
    s21_breakeven = MarketEconomics(hashprice, 0.0).breakeven_usd_per_mwh(make_device("S21"))
    with ERCOT_DAY_FILE.open(newline="") as stream:
        prices = [float(r["hb_south_rtm_spp_usd_per_mwh"]) for r in csv.DictReader(stream)]
    assert len(prices) == 96
    assert min(prices) == pytest.approx(14.6, abs=0.05)
    assert max(prices) == 4857.82
    assert sum(price > s21_breakeven for price in prices) == 11


# --- margins ------------------------------------------------------------------------------


def test_mining_margin_changes_sign_at_breakeven() -> None:
    device = make_device("S21")
    breakeven = worked_economics(0.0).breakeven_usd_per_mwh(device)
    mine = Workload.mine("main")
    below = option_economics(device, mine, worked_economics(breakeven - 1.0))
    at = option_economics(device, mine, worked_economics(breakeven))
    above = option_economics(device, mine, worked_economics(breakeven + 1.0))
    assert below.margin_usd_per_hour > 0
    assert at.margin_usd_per_hour == pytest.approx(0.0, abs=1e-12)
    assert above.margin_usd_per_hour < 0


def test_mining_option_figures() -> None:
    device = make_device("S21")
    economics = worked_economics(50.0)
    option = option_economics(device, Workload.mine("main"), economics)
    assert option.device_id == "m1"
    assert option.workload == Workload.mine("main")
    assert option.power_w == 3500.0
    assert option.revenue_usd_per_hour == pytest.approx(
        200.0 * economics.hashprice_usd_per_th_day / 24
    )
    assert option.cost_usd_per_hour == pytest.approx(3.5 * 50.0 / 1000)  # 3.5 kW at 0.05 USD/kWh
    assert option.margin_usd_per_hour == pytest.approx(
        option.revenue_usd_per_hour - option.cost_usd_per_hour
    )


def test_power_level_scales_linearly_and_keeps_breakeven() -> None:
    device = make_device("S21 Pro")
    economics = worked_economics(70.0)
    full = option_economics(device, Workload.mine("main"), economics)
    half = option_economics(device, Workload.mine("main", 0.5), economics)
    assert half.power_w == pytest.approx(full.power_w / 2)
    assert half.revenue_usd_per_hour == pytest.approx(full.revenue_usd_per_hour / 2)
    at_breakeven = worked_economics(economics.breakeven_usd_per_mwh(device))
    assert option_economics(
        device, Workload.mine("main", 0.5), at_breakeven
    ).margin_usd_per_hour == pytest.approx(0.0, abs=1e-12)


def test_negative_price_pays_the_site_to_consume() -> None:
    device = make_device("S19j Pro")
    economics = worked_economics(-20.0)
    mine = option_economics(device, Workload.mine("main"), economics)
    sleep = option_economics(device, Workload.sleep(), economics)
    off = option_economics(device, Workload.off(), economics)
    assert mine.cost_usd_per_hour == pytest.approx(-3.068 * 20.0 / 1000)
    assert mine.margin_usd_per_hour > mine.revenue_usd_per_hour > 0
    assert sleep.cost_usd_per_hour < 0 < sleep.margin_usd_per_hour
    assert off.margin_usd_per_hour == 0.0
    assert mine.margin_usd_per_hour > sleep.margin_usd_per_hour > off.margin_usd_per_hour


def test_sleep_costs_sleep_power_and_off_costs_nothing() -> None:
    device = make_device("S21")
    economics = worked_economics(300.0)
    sleep = option_economics(device, Workload.sleep(), economics)
    assert sleep.power_w == device.sleep_power_w == 15.0
    assert sleep.revenue_usd_per_hour == 0.0
    assert sleep.cost_usd_per_hour == pytest.approx(0.015 * 300.0 / 1000)
    assert sleep.margin_usd_per_hour == pytest.approx(-sleep.cost_usd_per_hour)
    off = option_economics(device, Workload.off(), economics)
    assert (off.power_w, off.revenue_usd_per_hour, off.cost_usd_per_hour) == (0.0, 0.0, 0.0)


def test_ai_is_not_an_option_for_an_asic() -> None:
    with pytest.raises(ValueError, match="ASIC"):
        option_economics(make_device("S21"), Workload.ai("queue"), worked_economics(10.0))


def test_pool_fee_reduces_revenue_proportionally() -> None:
    device = make_device("S21 XP")
    revenues = []
    for fee in (0.0, 0.02, 0.25):
        economics = market_economics(make_snapshot(pool_fee=fee, **worked_market()))
        assert economics is not None
        revenues.append(
            option_economics(device, Workload.mine("main"), economics).revenue_usd_per_hour
        )
    assert revenues[1] == pytest.approx(revenues[0] * 0.98)
    assert revenues[2] == pytest.approx(revenues[0] * 0.75)


def test_fees_add_to_the_subsidy() -> None:
    base = hashprice_usd_per_th_day(DIFFICULTY, BTC_CLOSE_USD, SUBSIDY_BTC)
    with_fees = hashprice_usd_per_th_day(DIFFICULTY, BTC_CLOSE_USD, SUBSIDY_BTC, 0.125)
    assert with_fees == pytest.approx(base * (3.25 / 3.125))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: btc_per_th_day(0.0, 3.125), "difficulty"),
        (lambda: hashprice_usd_per_th_day(DIFFICULTY, 1.0, 3.125, pool_fee=1.0), "pool_fee"),
        (lambda: hashprice_usd_per_th_day(DIFFICULTY, 1.0, 3.125, pool_fee=-0.1), "pool_fee"),
        (lambda: breakeven_usd_per_mwh(0.05, 0.0), "efficiency"),
    ],
)
def test_invalid_arguments_raise(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- market_economics ---------------------------------------------------------------------


def test_market_economics_from_a_complete_snapshot() -> None:
    economics = market_economics(make_snapshot(**worked_market(power_price_usd_per_mwh=-5.5)))
    assert economics is not None
    assert round(economics.hashprice_usd_per_th_day, 4) == 0.0427
    assert economics.power_price_usd_per_mwh == -5.5


@pytest.mark.parametrize(
    "missing", ["btc_price_usd", "difficulty", "block_subsidy_btc", "power_price_usd_per_mwh"]
)
def test_market_economics_is_none_when_a_needed_input_is_missing(missing: str) -> None:
    assert market_economics(make_snapshot(**worked_market(**{missing: None}))) is None


def test_missing_fees_count_as_zero() -> None:
    without = market_economics(make_snapshot(**worked_market(fees_btc_per_block=None)))
    zero = market_economics(make_snapshot(**worked_market(fees_btc_per_block=0.0)))
    some = market_economics(make_snapshot(**worked_market(fees_btc_per_block=0.5)))
    assert without is not None and zero is not None and some is not None
    assert without == zero
    assert some.hashprice_usd_per_th_day > zero.hashprice_usd_per_th_day


@pytest.mark.parametrize(
    "overrides",
    [
        {"difficulty": 0.0},
        {"difficulty": -1.0},
        {"btc_price_usd": math.nan},
        {"btc_price_usd": -1.0},
        {"block_subsidy_btc": -3.125},
        {"fees_btc_per_block": math.inf},
        {"power_price_usd_per_mwh": math.nan},
    ],
)
def test_market_economics_treats_unusable_values_as_missing(overrides: dict[str, float]) -> None:
    assert market_economics(make_snapshot(**worked_market(**overrides))) is None


# --- price_options ------------------------------------------------------------------------


def test_price_options_prices_every_option_of_every_device() -> None:
    devices = [make_device("S21", "a", ("main", "backup")), make_device("S19j Pro", "b")]
    economics = worked_economics(80.0)
    priced = price_options(devices, economics)
    assert list(priced) == ["a", "b"]
    for device in devices:
        options = priced[device.id]
        assert [o.workload for o in options] == list(device.options())
        assert all(o.device_id == device.id for o in options)
        assert options == [option_economics(device, w, economics) for w in device.options()]
    # At 80 USD/MWh the S21 (break-even ~102) earns, the S19j Pro (~60) loses.
    assert priced["a"][0].margin_usd_per_hour > 0 > priced["b"][0].margin_usd_per_hour
    assert priced["a"][-1].workload.kind is WorkloadKind.SLEEP


def test_price_options_of_no_devices_is_empty() -> None:
    assert price_options([], worked_economics(10.0)) == {}
