"""Guard rules: stale price, thermal, dwell, minimum gain, power cap."""

from __future__ import annotations

import dataclasses

from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.core.model import Assignment, Plan, Sample, Snapshot, Workload
from scheduler.policies.breakeven import BreakevenPolicy
from tests.scheduler.helpers import device, market, snapshot

DEVICES = [device("a", "S21"), device("b", "S19j Pro"), device("c", "S21 XP")]


def guard(**config: object) -> Guard:
    values: dict[str, object] = {"min_dwell_seconds": 0.0, "stale_price_seconds": 3600.0}
    values.update(config)
    return Guard(GuardConfig.model_validate(values), power_cap_w=1e9)


def run(
    g: Guard, snap_kwargs: dict[str, object], price: float | None
) -> dict[str, tuple[str, str]]:
    snap = snapshot(DEVICES, price, **snap_kwargs)  # type: ignore[arg-type]
    plan = g.apply(BreakevenPolicy().plan(snap), snap)
    return {a.device_id: (str(a.workload), a.reason) for a in plan.assignments}


def test_missing_price_sleeps_everything() -> None:
    result = run(guard(), {}, None)
    assert result == {d.id: ("sleep", "stale_price") for d in DEVICES}


def test_stale_price_sleeps_and_hold_keeps_current() -> None:
    old = market(20.0, observed_at=0.0)
    result = run(guard(stale_price_seconds=60.0), {"now": 61.0, "market_state": old}, 20.0)
    assert set(result.values()) == {("sleep", "stale_price")}
    fresh = run(guard(stale_price_seconds=60.0), {"now": 59.0, "market_state": old}, 20.0)
    assert set(fresh.values()) == {("mine(main)", "price_below_breakeven")}
    held = run(
        guard(stale_price_seconds=60.0, stale_action="hold"),
        {"now": 61.0, "market_state": old},
        20.0,
    )
    assert set(held.values()) == {("mine(main)", "stale_price")}


def test_hot_device_sleeps_even_when_mining_pays() -> None:
    result = run(guard(), {"temperatures": {"b": 91.0}}, 20.0)
    assert result["b"] == ("sleep", "thermal")
    assert result["a"] == ("mine(main)", "price_below_breakeven")


def test_min_dwell_holds_economic_switch_but_not_safety() -> None:
    g = guard(min_dwell_seconds=300.0)
    run(g, {"now": 100.0}, 200.0)  # price spike: all go to sleep, switch time recorded
    asleep = {d.id: Workload.sleep() for d in DEVICES}
    result = run(g, {"now": 200.0, "current": asleep}, 20.0)
    assert set(result.values()) == {("sleep", "min_dwell")}
    result = run(g, {"now": 401.0, "current": asleep}, 20.0)
    assert set(result.values()) == {("mine(main)", "price_below_breakeven")}
    # a thermal sleep goes through even inside the dwell time
    result = run(g, {"now": 402.0, "temperatures": {"a": 99.0}}, 20.0)
    assert result["a"] == ("sleep", "thermal")


def test_min_margin_gain_ignores_small_switches() -> None:
    # at 108 USD/MWh an S21 loses a little mining; sleeping gains less than 10 USD/h
    result = run(guard(min_margin_gain_usd_per_hour=10.0), {}, 108.0)
    assert result["a"] == ("mine(main)", "below_min_gain")
    result = run(guard(min_margin_gain_usd_per_hour=0.01), {}, 108.0)
    assert result["a"] == ("sleep", "price_above_breakeven")


def test_power_cap_sleeps_least_efficient_first() -> None:
    total_w = sum(d.nominal_power_w for d in DEVICES)
    g = Guard(GuardConfig(min_dwell_seconds=0), power_cap_w=total_w - 100)
    snap = snapshot(DEVICES, 20.0)
    plan = g.apply(BreakevenPolicy().plan(snap), snap)
    result = {a.device_id: (str(a.workload), a.reason) for a in plan.assignments}
    assert result["b"] == ("sleep", "power_cap")  # S19j Pro, 29.5 J/TH
    assert result["a"][0] == result["c"][0] == "mine(main)"


def test_power_cap_counts_unreachable_devices_at_nominal_power() -> None:
    g = Guard(GuardConfig(min_dwell_seconds=0), power_cap_w=2 * 3700)
    snap = snapshot(DEVICES, 20.0, unreachable=frozenset({"c"}))
    plan = g.apply(
        Plan(
            100.0,
            tuple(
                Assignment(d.id, Workload.mine("main"), "price_below_breakeven", 1.0)
                for d in DEVICES[:2]
            ),
        ),
        snap,
    )
    reasons = {a.device_id: a.reason for a in plan.assignments}
    assert reasons["b"] == "power_cap"


def test_hot_chip_sleeps_a_device_whose_summary_temperature_is_fine() -> None:
    import dataclasses

    from scheduler.core.model import BoardHealth, Health

    snap = snapshot(DEVICES, 20.0)  # every sample says 60 C
    hot = Health.of([BoardHealth(chip_temp_c=62.0), BoardHealth(chip_temp_c=88.5)])
    samples = dict(snap.samples)
    samples["c"] = dataclasses.replace(samples["c"], health=hot)
    snap = dataclasses.replace(snap, samples=samples)
    plan = guard().apply(BreakevenPolicy().plan(snap), snap)
    result = {a.device_id: (str(a.workload), a.reason) for a in plan.assignments}
    assert result["c"] == ("sleep", "thermal")  # the hottest chip, 88.5 >= 85
    assert result["a"] == ("mine(main)", "price_below_breakeven")


def test_power_cap_counts_a_machine_measured_above_its_nominal_power() -> None:
    # Two S21 (nominal 3,500 W) measured at 4,000 W on the workload they keep: 8,000 W over
    # a 7,500 W cap although their nominal power (7,000 W) fits.
    pair = [device("a", "S21"), device("b", "S21")]
    mining = Workload.mine("main")
    samples = {d.id: Sample(d.id, 99.0, mining, power_w=4000.0, hashrate_hs=200e12) for d in pair}
    base = snapshot(pair, 20.0, {"a": mining, "b": mining})
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    snap = Snapshot(**{**fields, "samples": samples})
    plan = Guard(GuardConfig(min_dwell_seconds=0), power_cap_w=7500).apply(
        BreakevenPolicy().plan(snap), snap
    )
    reasons = sorted(a.reason for a in plan.assignments)
    assert reasons == ["power_cap", "price_below_breakeven"]
    # Estimated power is not a measurement: the nominal figure stands.
    estimated = {d: dataclasses.replace(s, power_estimated=True) for d, s in samples.items()}
    snap = Snapshot(**{**fields, "samples": estimated})
    plan = Guard(GuardConfig(min_dwell_seconds=0), power_cap_w=7500).apply(
        BreakevenPolicy().plan(snap), snap
    )
    assert all(a.reason != "power_cap" for a in plan.assignments)
