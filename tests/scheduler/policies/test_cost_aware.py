"""max-margin's cost-aware switching: bands from warm-up and switch costs and the learned excursions."""

from __future__ import annotations

import math
import random
import re
from datetime import date
from pathlib import Path

import pytest

from scheduler.api.views import plan_view
from scheduler.backtest.engine import SwitchingCosts, load_trace, run_backtest
from scheduler.config.loading import load_config
from scheduler.core.model import Snapshot, Workload
from scheduler.policies.excursions import BELOW_BANDS, ExcursionModel
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import device, market, snapshot

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "drivers" / "market" / "data"
S21 = device("a", "S21")  # break-even ~101.7 USD/MWh on the helpers' market


def test_runs_are_learned_from_past_readings_only() -> None:
    model = ExcursionModel(prior_hours=0.25)
    prices = [10, 200, 200, 10, 10, 10, 200, 10]  # runs above 100: 2 and 1 readings of 15 min
    for index, price in enumerate(prices):
        model.observe(index * 900.0, price)
    assert model.mean_run_hours(100.0, above=True) == pytest.approx((0.75 + 0.25) / 3)
    assert model.mean_run_hours(100.0, above=False) == pytest.approx((1.0 + 0.25) / 3)
    model.observe(7 * 900.0 + 10, 500.0)  # too soon after the last reading: not kept
    assert len(model) == len(prices)
    model.observe(8 * 900.0, 500.0)  # the newest reading's run has no length yet: not counted
    assert model.mean_run_hours(100.0, above=True) == pytest.approx((0.75 + 0.25) / 3)


def test_capacity_keeps_the_newest_readings() -> None:
    model = ExcursionModel(capacity=4, prior_hours=1.0)
    for index in range(20):
        model.observe(index * 3600.0, 200.0 if index % 2 else 0.0)
    # Last 4 readings: 200, 0, 200, [0 newest]: two completed one-hour runs above 100.
    assert model.mean_run_hours(100.0, above=True) == pytest.approx((2.0 + 1.0) / 3)


def test_a_price_just_under_the_level_is_expected_to_climb_back_sooner() -> None:
    model = ExcursionModel(prior_hours=0.25)
    # Two 1-hour calm runs at 20 and three dips to 95 between spikes at 300, each left upwards.
    prices = [20.0] * 4 + [300.0, 95.0, 300.0, 95.0, 300.0, 95.0, 300.0] + [20.0] * 4 + [300.0]
    for index, price in enumerate(prices):
        model.observe(index * 900.0, price)
    near = model.expected_hours_below(100.0, 96.0)  # band (0.95, 1]: 3 readings, 3 exits
    far = model.expected_hours_below(100.0, 30.0)  # band up to 0.5: 8 readings, 2 exits
    assert near == pytest.approx((0.75 + 0.25) / 4)
    assert far == pytest.approx((2.0 + 0.25) / 3)
    # Without the band, every run below counts alike: 5 runs, 2.75 hours.
    assert model.mean_run_hours(100.0, above=False) == pytest.approx((2.75 + 0.25) / 6)
    assert model.expected_hours_below(100.0, 85.0) == pytest.approx(0.25)  # no past reading there


def test_a_sleeping_miner_waits_out_a_dip_between_spikes_but_wakes_when_calm() -> None:
    mining, asleep = Workload.mine("main"), Workload.sleep()
    policy = MaxMarginPolicy()
    history = ([40.0] * 40 + [300.0, 98.0] * 3) * 5  # dips just under break-even climb back
    for index, price in enumerate(history):
        policy.plan(_at(price, index, mining))
    (dip,) = policy.plan(_at(98.0, len(history), asleep)).assignments
    (calm,) = policy.plan(_at(40.0, len(history) + 1, asleep)).assignments
    assert str(dip.workload) == "sleep" and dip.reason == "within_hysteresis"
    assert str(calm.workload) == "mine(main)"


def _at(price: float, index: int, current: Workload) -> Snapshot:
    now = index * 900.0
    return snapshot([S21], price, {"a": current}, now=now, market_state=market(price, now))


def test_a_switch_cost_widens_the_sleep_band_and_short_spikes_are_ridden_out() -> None:
    history = [50.0] * 7 + [180.0]  # spikes of one interval above break-even
    history = history * 20 + [180.0]
    mining = Workload.mine("main")
    free = MaxMarginPolicy()
    costly = MaxMarginPolicy(switch_cost_usd=0.5)
    for policy in (free, costly):
        for index, price in enumerate(history):
            policy.plan(_at(price, index, mining))
    snap = _at(180.0, len(history), mining)
    (cheap,) = free.plan(snap).assignments
    (dear,) = costly.plan(snap).assignments
    # 0.5 USD a switch, a round trip of ~1.03 USD over a 15-minute spike: not worth it.
    assert str(dear.workload) == "mine(main)" and dear.reason == "within_hysteresis"
    assert str(cheap.workload) == "sleep"
    view = plan_view(costly.plan(snap))
    assert "sleeps above" in view[0].detail and "break-even" in view[0].detail
    # The detail says why: the payback time at this price against the expected excursion.
    for policy, sleeps in ((costly, False), (free, True)):
        detail = plan_view(policy.plan(snap))[0].detail
        found = re.search(
            r"expected excursion ([\d.]+) h; a sleep at 180.00 pays back in ([\d.]+) h", detail
        )
        assert found is not None, detail
        expected, payback = float(found[1]), float(found[2])
        assert (payback < expected) is sleeps


def test_cost_aware_beats_always_on_and_naive_with_a_switch_cost_where_fixed_bands_lose() -> None:
    config = load_config(ROOT / "deploy" / "fleets" / "s19jpro.toml")
    config.device_ranges[0].count = 1
    trace = load_trace(
        DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv",
        DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv",
        date(2024, 8, 1),
        date(2024, 8, 31),
    )
    costs = SwitchingCosts(wake_seconds=300, switch_cost_usd=0.5)
    aware = run_backtest(
        config, MaxMarginPolicy(switch_cost_usd=0.5), trace, info="realtime", costs=costs
    )
    fixed = run_backtest(
        config, MaxMarginPolicy(switching="bands"), trace, info="realtime", costs=costs
    )
    assert aware.policy.margin_usd > aware.always_on.margin_usd
    assert aware.policy.margin_usd > aware.naive.margin_usd
    assert fixed.policy.margin_usd < fixed.always_on.margin_usd


def test_under_a_binding_cap_a_switch_cost_does_not_lock_in_the_wrong_machines() -> None:
    # At start every machine mines above the cap: which ones sleep is a lasting swap, not a price
    # excursion, so the efficient ones must keep mining whatever a switch costs.
    config = load_config(ROOT / "deploy" / "fleets" / "mixed.toml")
    trace = load_trace(
        DATA / "ercot_hb_south_15min_2024-06-01_2025-03-27.csv",
        DATA / "btc_daily_price_difficulty_2017-08-17_2025-06-02.csv",
        date(2024, 6, 1),
        date(2024, 6, 7),
    )
    costs = SwitchingCosts(wake_seconds=300, switch_cost_usd=0.5)
    report = run_backtest(
        config,
        MaxMarginPolicy(switch_cost_usd=0.5),
        trace,
        info="realtime",
        costs=costs,
        exact_optimum=False,
    )
    assert report.cap_violations == 0
    assert report.policy.margin_usd >= report.always_on.margin_usd


def _reference(readings: list[tuple[float, float]], capacity: int, level: float) -> dict:
    """The figures recomputed from scratch over the window: (price, hours) of each reading."""
    window = readings[:-1][-(capacity - 1) :]
    out: dict = {}
    for above in (False, True):
        inside = [(p > level) == above for p, _ in window]
        runs = sum(1 for i, x in enumerate(inside) if x and (i == 0 or not inside[i - 1]))
        hours = sum(h for (_, h), x in zip(window, inside, strict=True) if x)
        out[("run", above)] = (hours + 0.5) / (runs + 1)
    successors = [p for p, _ in readings[1:]][-len(window) :] if window else []
    lower = -math.inf
    for band, edge in enumerate(BELOW_BANDS):
        upper = edge * level
        members = [
            (h, nxt > level)
            for (p, h), nxt in zip(window, successors, strict=True)
            if lower < p <= upper
        ]
        out[("band", band)] = (sum(h for h, _ in members) + 0.5) / (sum(e for _, e in members) + 1)
        lower = upper
    return out


@pytest.mark.parametrize("max_levels", [256, 1])  # 1: most levels computed when asked
@pytest.mark.parametrize("seed", range(6))
def test_figures_kept_up_to_date_equal_figures_recomputed(seed: int, max_levels: int) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([2, 3, 5, 8])
    model = ExcursionModel(capacity=capacity, prior_hours=0.5, max_levels=max_levels)
    readings: list[tuple[float, float]] = []  # (price, hours it lasted; the newest: 0)
    at = 0.0
    levels = (100.0, 90.0, 120.0)
    for _ in range(200):
        step = rng.choice([30.0, 900.0, 300.0, 3600.0])
        price = rng.choice([20.0, 85.0, 92.0, 97.0, 99.0, 100.0, 105.0, 130.0, 400.0])
        if model.observe(at + step, price):
            if readings:
                readings[-1] = (readings[-1][0], step / 3600.0)
            readings.append((price, 0.0))
            at += step
        level = rng.choice(levels)  # followed from its first query on
        expected = _reference(readings, capacity, level)
        for above in (False, True):
            got = model.mean_run_hours(level, above=above, prior_hours=0.5)
            assert got == pytest.approx(expected[("run", above)])
        for band, edge in enumerate(BELOW_BANDS):
            price_in_band = edge * level - 1e-6
            got = model.expected_hours_below(level, price_in_band, prior_hours=0.5)
            assert got == pytest.approx(expected[("band", band)])
