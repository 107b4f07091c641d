"""max-margin: free choice, bands, the site cap and DR limits, and the greedy knapsack against an exact solve."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from scheduler.config.schema import PolicyConfig
from scheduler.core.economics import market_economics, option_economics
from scheduler.core.model import TERA, Device, DeviceKind, Event, Snapshot, Workload
from scheduler.policies import create_policy
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import device, snapshot

S21 = device("a", "S21")  # break-even ~101.7 USD/MWh on the helpers' market
S19 = device("b", "S19j Pro")  # ~60 USD/MWh


def decide(policy: MaxMarginPolicy, snap: Snapshot) -> dict[str, tuple[str, str]]:
    return {a.device_id: (str(a.workload), a.reason) for a in policy.plan(snap).assignments}


def test_registered_and_built_from_config() -> None:
    policy = create_policy(PolicyConfig(name="max-margin", sleep_band_usd_per_mwh=3.0))
    assert isinstance(policy, MaxMarginPolicy)
    assert policy.sleep_band_usd_per_mwh == 3.0


def test_between_breakevens_only_the_inefficient_model_sleeps() -> None:
    policy = MaxMarginPolicy(
        switching="bands",
        sleep_band_usd_per_mwh=0,
        wake_band_usd_per_mwh=0,
        sleep_band_fraction=0,
        wake_band_fraction=0,
    )
    assert decide(policy, snapshot([S21, S19], 80.0)) == {
        "a": ("mine(main)", "price_below_breakeven"),
        "b": ("sleep", "price_above_breakeven"),
    }


def test_bands_hold_the_current_workload_near_breakeven() -> None:
    policy = MaxMarginPolicy(
        switching="bands",
        sleep_band_usd_per_mwh=10,
        wake_band_usd_per_mwh=10,
        sleep_band_fraction=0,
        wake_band_fraction=0,
    )
    mining = {"a": Workload.mine("main")}
    asleep = {"a": Workload.sleep()}
    assert decide(policy, snapshot([S21], 105.0, mining))["a"] == (
        "mine(main)",
        "within_hysteresis",
    )
    assert decide(policy, snapshot([S21], 115.0, mining))["a"] == ("sleep", "price_above_breakeven")
    assert decide(policy, snapshot([S21], 95.0, asleep))["a"] == ("sleep", "within_hysteresis")
    assert decide(policy, snapshot([S21], 90.0, asleep))["a"] == (
        "mine(main)",
        "price_below_breakeven",
    )


def test_missing_market_gives_an_empty_plan() -> None:
    assert MaxMarginPolicy().plan(snapshot([S21], None)).assignments == ()


def test_cap_sleeps_the_least_efficient_first() -> None:
    devices = [device(f"s21-{i}", "S21") for i in range(3)] + [
        device(f"s19-{i}", "S19j Pro") for i in range(3)
    ]
    snap = snapshot(devices, 20.0)
    capped = Snapshot(
        **{
            **{f: getattr(snap, f) for f in snap.__dataclass_fields__},
            "power_cap_w": 3 * 3500 + 3068 + 400.0,
        }
    )
    plan = {a.device_id: a for a in MaxMarginPolicy().plan(capped).assignments}
    mining = sorted(d for d, a in plan.items() if a.workload.is_running)
    assert [d for d in mining if d.startswith("s21")] == ["s21-0", "s21-1", "s21-2"]
    assert len([d for d in mining if d.startswith("s19")]) == 1
    assert all(plan[d].reason == "power_cap" for d in plan if not plan[d].workload.is_running)
    total = sum(
        d.nominal_power_w if plan[d.id].workload.is_running else d.sleep_power_w for d in devices
    )
    assert total <= capped.power_cap_w  # type: ignore[operator]


def test_dr_event_target_and_reduction_limit_the_site() -> None:
    devices = [device(f"d{i}", "S21") for i in range(4)]
    base = snapshot(devices, 20.0)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    start, end = base.wall - timedelta(minutes=5), base.wall + timedelta(minutes=30)
    target = Snapshot(**{**fields, "events": (Event("e1", start, end, target_kw=7.2),)})
    plan = MaxMarginPolicy().plan(target)
    assert sum(a.workload.is_running for a in plan.assignments) == 2
    assert {a.reason for a in plan.assignments if not a.workload.is_running} == {"dr_event"}
    reduce = Snapshot(**{**fields, "events": (Event("e2", start, end, reduction_kw=3.6),)})
    assert sum(a.workload.is_running for a in MaxMarginPolicy().plan(reduce).assignments) == 2
    later = Snapshot(
        **{**fields, "events": (Event("e3", end, end + timedelta(hours=1), target_kw=0.0),)}
    )
    assert sum(a.workload.is_running for a in MaxMarginPolicy().plan(later).assignments) == 4


def _random_device(rng: random.Random, index: int) -> Device:
    power_w = rng.randrange(20, 40) * 100.0
    return Device(
        id=f"r{index}",
        kind=DeviceKind.ASIC,
        model="custom",
        driver="cgminer",
        address="127.60.0.1",
        port=4028,
        nominal_hashrate_hs=rng.uniform(80, 280) * TERA,
        nominal_power_w=power_w,
        sleep_power_w=0.0,
        pools=("main",),
    )


def _exact(devices: list[Device], snap: Snapshot, levels: tuple[float, ...], cap_w: float) -> float:
    """Exact multiple-choice knapsack by DP over power in units of 100 W (all option powers are multiples)."""
    economics = market_economics(snap)
    assert economics is not None
    unit = 100.0
    capacity = int(cap_w // unit)
    best = [0.0] + [float("-inf")] * capacity  # best margin using exactly w units
    for dev in devices:
        options = [Workload.sleep()] + [Workload.mine("main", level) for level in levels]
        priced = [option_economics(dev, w, economics) for w in options]
        new = [float("-inf")] * (capacity + 1)
        for used, value in enumerate(best):
            if value == float("-inf"):
                continue
            for option in priced:
                weight = round(option.power_w / unit)
                if used + weight <= capacity:
                    candidate = value + option.margin_usd_per_hour
                    if candidate > new[used + weight]:
                        new[used + weight] = candidate
        best = new
    return max(best)


@pytest.mark.parametrize(
    ("seed", "size"), [(s, (8, 16)) for s in range(20)] + [(s, (40, 70)) for s in range(100, 106)]
)
def test_plan_is_within_one_percent_of_the_exact_solve(seed: int, size: tuple[int, int]) -> None:
    """Small sites take the exact DP path, larger ones the greedy: both within 1% of an exact solve."""
    rng = random.Random(seed)
    levels = (0.5, 0.75, 1.0)
    devices = [_random_device(rng, i) for i in range(rng.randrange(*size))]
    full_w = sum(d.nominal_power_w for d in devices)
    cap_w = rng.uniform(0.3, 0.9) * full_w
    snap = snapshot(
        devices, rng.uniform(10.0, 90.0), {d.id: Workload.mine("main") for d in devices}
    )
    snap = Snapshot(
        **{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, "power_cap_w": cap_w}
    )
    policy = MaxMarginPolicy(
        switching="bands",
        sleep_band_usd_per_mwh=0,
        wake_band_usd_per_mwh=0,
        sleep_band_fraction=0,
        wake_band_fraction=0,
        power_levels=levels,
    )
    plan = policy.plan(snap)
    by_id = {d.id: d for d in devices}
    economics = market_economics(snap)
    assert economics is not None
    used_w = sum(
        option_economics(by_id[a.device_id], a.workload, economics).power_w
        for a in plan.assignments
    )
    greedy = sum(a.expected_margin_usd_per_hour for a in plan.assignments)
    exact = _exact(devices, snap, levels, cap_w)
    assert used_w <= cap_w + 1e-6
    assert exact > 0
    assert greedy >= exact * 0.99, (greedy, exact)
    assert greedy <= exact + 1e-9


def _with(snap: Snapshot, **changes: object) -> Snapshot:
    return Snapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, **changes})


def test_pool_failover_and_fee_choice() -> None:
    mining_main = {"a": Workload.mine("main")}
    base = snapshot([S21], 20.0, mining_main)
    policy = MaxMarginPolicy()
    assert decide(policy, base)["a"] == ("mine(main)", "price_below_breakeven")
    down = _with(base, pools_up={"main": False})
    assert decide(policy, down)["a"] == ("mine(backup)", "pool_down")
    all_down = _with(base, pools_up={"main": False, "backup": False})
    assert decide(policy, all_down)["a"] == ("sleep", "pools_down")
    cheaper = MaxMarginPolicy(pool_fees={"backup": 0.01, "main": 0.02})
    plan = cheaper.plan(base).by_device()["a"]
    assert (str(plan.workload), plan.reason) == ("mine(backup)", "lower_pool_fee")
    same_fee = MaxMarginPolicy(pool_fees={"backup": 0.02, "main": 0.02})
    on_backup = snapshot([S21], 20.0, {"a": Workload.mine("backup")})
    assert decide(same_fee, on_backup)["a"] == (
        "mine(backup)",
        "price_below_breakeven",
    )  # ties keep
    # A higher fee lowers the expected margin by the fee difference of the revenue.
    dear = MaxMarginPolicy(pool_fees={"main": 0.10, "backup": 0.10}).plan(base).by_device()["a"]
    assert (
        dear.expected_margin_usd_per_hour
        < policy.plan(base).by_device()["a"].expected_margin_usd_per_hour
    )
