"""The breakeven policy on the 2024-08-20 economics (S21 break-even ~101.7 USD/MWh)."""

from __future__ import annotations

import pytest

from scheduler.config.schema import PolicyConfig
from scheduler.core.model import Workload
from scheduler.policies import UnknownPolicyError, create_policy
from scheduler.policies.breakeven import BreakevenPolicy
from tests.scheduler.helpers import device, snapshot

S21 = device("a", "S21")
S19 = device("b", "S19j Pro")  # break-even ~60 USD/MWh


def plan_for(
    price: float, current: dict[str, Workload] | None = None, band: float = 5.0
) -> dict[str, tuple[str, str]]:
    policy = BreakevenPolicy(hysteresis_usd_per_mwh=band)
    plan = policy.plan(snapshot([S21, S19], price, current))
    return {a.device_id: (str(a.workload), a.reason) for a in plan.assignments}


def test_cheap_power_mines_everything() -> None:
    assert plan_for(20.0) == {
        "a": ("mine(main)", "price_below_breakeven"),
        "b": ("mine(main)", "price_below_breakeven"),
    }


def test_between_breakevens_sleeps_only_the_inefficient_model() -> None:
    assert plan_for(80.0) == {
        "a": ("mine(main)", "price_below_breakeven"),
        "b": ("sleep", "price_above_breakeven"),
    }


def test_spike_sleeps_everything_with_negative_mining_margin() -> None:
    policy = BreakevenPolicy()
    plan = policy.plan(snapshot([S21, S19], 4857.82))
    assert {str(a.workload) for a in plan.assignments} == {"sleep"}
    # sleeping costs only sleep power at the spike price
    margin = plan.by_device()["a"].expected_margin_usd_per_hour
    assert margin == pytest.approx(-S21.sleep_power_w / 1e6 * 4857.82)


def test_hysteresis_band_holds_both_ways() -> None:
    mining = {"a": Workload.mine("main"), "b": Workload.mine("main")}
    asleep = {"a": Workload.sleep(), "b": Workload.sleep()}
    # 104 is above the S21's ~101.7 break-even but inside the 5 USD band: keep mining
    assert plan_for(104.0, mining)["a"] == ("mine(main)", "within_hysteresis")
    # 99 is below break-even but inside the band: stay asleep
    assert plan_for(99.0, asleep)["a"] == ("sleep", "within_hysteresis")
    # outside the band both ways, it switches
    assert plan_for(108.0, mining)["a"] == ("sleep", "price_above_breakeven")
    assert plan_for(95.0, asleep)["a"] == ("mine(main)", "price_below_breakeven")


def test_keeps_current_configured_pool() -> None:
    current = {"a": Workload.mine("backup"), "b": Workload.sleep()}
    assert plan_for(20.0, current)["a"] == ("mine(backup)", "price_below_breakeven")


def test_missing_market_input_gives_empty_plan() -> None:
    plan = BreakevenPolicy().plan(snapshot([S21], None))
    assert plan.assignments == ()


def test_registry() -> None:
    assert isinstance(create_policy(PolicyConfig(name="breakeven")), BreakevenPolicy)
    with pytest.raises(UnknownPolicyError, match="known: breakeven"):
        create_policy(PolicyConfig(name="nope"))
