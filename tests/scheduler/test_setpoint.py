"""Closed-loop site power control: shedding order, restore, deadband, watchdog, states."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.config.grid import SetpointConfig
from scheduler.control.setpoint import SetpointController, TargetState
from scheduler.core.model import Assignment, Device, Snapshot, Workload
from scheduler.core.power import planned_power_w
from scheduler.core.reasons import Reason
from tests.scheduler.helpers import device, snapshot

# Two S19j Pro (least efficient) on LuxOS (power targets), two S21 on LuxOS, two S21 on cgminer.
DEVICES = [
    dataclasses.replace(device("old-lux-1", "S19j Pro"), driver="luxos"),
    dataclasses.replace(device("old-lux-2", "S19j Pro"), driver="luxos"),
    dataclasses.replace(device("new-lux-1", "S21"), driver="luxos"),
    dataclasses.replace(device("new-cg-1", "S21"), driver="cgminer"),
    dataclasses.replace(device("new-cg-2", "S21"), driver="cgminer"),
]


class Plant:
    """The site as the meter sees it: what the plan says each machine draws, plus a base load."""

    def __init__(self, devices: list[Device], base_w: float) -> None:
        self.devices = {d.id: d for d in devices}
        self.running = {d.id: Workload.mine("main") for d in devices}
        self.base_w = base_w

    def metered(self) -> float:
        return self.base_w + sum(
            planned_power_w(self.devices[d], w) for d, w in self.running.items()
        )

    def snap(self, now: float) -> Snapshot:
        snap = snapshot(list(self.devices.values()), 40.0, dict(self.running), now=now)
        samples = {  # each machine reports what it draws on its workload
            d: dataclasses.replace(s, power_w=planned_power_w(self.devices[d], self.running[d]))
            for d, s in snap.samples.items()
        }
        return dataclasses.replace(snap, samples=samples)


def step(controller: SetpointController, plant: Plant, now: float) -> dict[str, Assignment]:
    snap = plant.snap(now)
    policy = {
        d: Assignment(d, Workload.mine("main"), Reason.PRICE_BELOW_BREAKEVEN, 1.0)
        for d in plant.devices
    }
    assigned = dict(policy)
    controller.apply(assigned, snap, policy)
    plant.running = {d: a.workload for d, a in assigned.items()}
    return assigned


def controller(plant: Plant, **options: object) -> SetpointController:
    config = SetpointConfig(confirm_seconds=0, drift_seconds=0, **options)  # type: ignore[arg-type]
    clock = iter(range(10_000))
    return SetpointController(config, metered_w=plant.metered, clock=lambda: float(next(clock)))


def test_power_targets_first_least_efficient_first_then_sleep_and_the_meter_confirms() -> None:
    plant = Plant(DEVICES, base_w=2000.0)
    full = plant.metered()
    ctl = controller(plant)
    target = ctl.set_target((full - 2500.0) / 1000.0, "operator", "t1")
    assert target.state is TargetState.PENDING
    assigned = step(ctl, plant, 1.0)
    # 2.5 kW: the least efficient LuxOS machine takes a power target first; nothing sleeps
    changed = {d: a.workload for d, a in assigned.items() if a.reason == Reason.SETPOINT}
    assert set(changed) <= {"old-lux-1", "old-lux-2"}
    assert all(w.kind.value == "mine" and w.power_level < 1.0 for w in changed.values())
    assert target.state is TargetState.DISPATCHED
    step(ctl, plant, 2.0)
    assert abs(plant.metered() - target.kw * 1000) <= 0.02 * target.kw * 1000
    assert target.state is TargetState.CONFIRMED
    # a deeper cut: every LuxOS machine to its floor, then cgminer machines sleep
    deep = ctl.set_target(8.0, "operator", "t2")
    step(ctl, plant, 3.0)
    step(ctl, plant, 4.0)
    asleep = {d for d, w in plant.running.items() if w == Workload.sleep()}
    assert asleep, "sleep comes after power targets"
    assert plant.metered() <= deep.kw * 1000 * 1.02
    assert target.state is TargetState.ENDED


def test_restore_is_staggered_and_never_passes_the_target() -> None:
    plant = Plant(DEVICES, base_w=0.0)
    ctl = controller(plant, restore_batch=1, restore_stagger_seconds=10)
    ctl.set_target(2.0, "operator", "low")
    step(ctl, plant, 1.0)
    held = len(ctl.held)
    assert held >= 4
    ctl.clear()
    step(ctl, plant, 2.0)
    assert len(ctl.held) == held - 1  # one machine per restore step
    step(ctl, plant, 5.0)
    assert len(ctl.held) == held - 1  # not before the stagger
    for now in range(12, 200, 11):
        step(ctl, plant, float(now))
    assert not ctl.held
    assert plant.running == {d.id: Workload.mine("main") for d in DEVICES}


def test_deadband_holds_small_errors() -> None:
    plant = Plant(DEVICES, base_w=0.0)
    ctl = controller(plant, deadband_pct=5.0)
    ctl.set_target(plant.metered() / 1000.0 * 0.97, "operator", "near")
    step(ctl, plant, 1.0)
    assert not ctl.held


def test_stale_base_point_stream_goes_to_the_safe_power() -> None:
    plant = Plant(DEVICES, base_w=0.0)
    ctl = controller(plant, signal_stale_seconds=30, stale_action="safe", safe_kw=5.0)
    ctl.set_target(plant.metered() / 1000.0, "basepoint", "bp1")
    step(ctl, plant, 1.0)
    assert not ctl.held
    for _now in range(2, 40):  # the controller's clock ticks once per call
        ctl.clock()
    step(ctl, plant, 40.0)
    assert ctl.stale_signal
    assert plant.metered() <= 5000.0 * 1.02


def test_a_target_outside_bounds_is_refused() -> None:
    ctl = SetpointController(SetpointConfig())
    with pytest.raises(ValueError):
        ctl.set_target(float("nan"), "operator", "x")
    with pytest.raises(ValueError):
        ctl.set_target(-1.0, "operator", "x")


def test_an_award_keeps_curtailable_load_running_and_a_deployment_sheds_it() -> None:
    from datetime import UTC, datetime, timedelta

    from scheduler.config.grid import AwardConfig
    from scheduler.control.grid import GridControl, Signal
    from scheduler.core.state import FleetState

    wall = datetime(2024, 8, 20, 19, 30, tzinfo=UTC)  # the helpers' snapshot time
    award = AwardConfig(
        name="ecrs-1",
        product="ECRS",
        mw=0.007,  # 7 kW: two S21
        start=wall - timedelta(hours=1),
        end=wall + timedelta(hours=1),
        response_seconds=600,
    )
    plant = Plant(DEVICES, base_w=1000.0)
    plant.running = {d: Workload.sleep() for d in plant.devices}  # the policy sleeps them all
    clock = iter(range(10_000))
    grid = GridControl(
        None,
        SetpointConfig(awards=[award], confirm_seconds=0),
        FleetState(DEVICES),
        clock=lambda: float(next(clock)),
        wall_clock=lambda: wall,
    )
    ctl = grid.setpoint
    snap = plant.snap(1.0)
    policy = {
        d: Assignment(d, Workload.sleep(), Reason.PRICE_ABOVE_BREAKEVEN, 0.0) for d in plant.devices
    }
    assigned = dict(policy)
    ctl.apply(assigned, snap, policy)
    kept = {d for d, a in assigned.items() if a.reason == Reason.AWARD_RESERVE}
    assert kept == {"new-lux-1", "new-cg-1"}  # the most efficient first, 7 kW
    plant.running = {d: a.workload for d, a in assigned.items()}

    def mining_w() -> float:
        return sum(
            planned_power_w(plant.devices[d], w)
            for d, w in plant.running.items()
            if w.kind.value == "mine"
        )

    # an operator's target cannot take the award's load: 7 kW stay running
    grid.setpoint.metered_w = plant.metered
    ctl.set_target(0.0, "operator", "zero")
    for now in (2.0, 3.0):
        assigned = dict(policy)
        ctl.apply(assigned, plant.snap(now), policy)
        plant.running = {d: a.workload for d, a in assigned.items()}
    assert mining_w() >= 7000.0
    ctl.clear()
    for now in (4.0, 5.0):
        assigned = dict(policy)
        ctl.apply(assigned, plant.snap(now), policy)
        plant.running = {d: a.workload for d, a in assigned.items()}
    before = plant.metered()
    # deployed: the target is the site less the award, at once (no ramp)
    ctl.projected_w = before
    result = grid.accept(Signal("dep-1", "webhook", "deploy", award="ecrs-1"))
    assert result.outcome == "accepted"
    assert ctl.target is not None and ctl.target.kw == pytest.approx((before - 7000.0) / 1000.0)
    assert ctl.target.immediate and ctl.target.response_limit_seconds == 600
    assigned = dict(policy)
    ctl.apply(assigned, plant.snap(6.0), policy)
    plant.running = {d: a.workload for d, a in assigned.items()}
    assert plant.metered() <= before - 7000.0 + 1000.0  # within the deadband of the award shed
    with pytest.raises(ValueError, match="no award"):
        grid.accept(Signal("dep-2", "webhook", "deploy", award="other"))


def test_ramp_and_hold_moves_the_limit_at_the_configured_rate() -> None:
    plant = Plant(DEVICES, base_w=0.0)
    full_kw = plant.metered() / 1000.0
    ctl = controller(plant, ramp_down_kw_per_minute=60.0)  # 1 kW a second
    ctl.set_target(full_kw - 10.0, "operator", "ramp")
    step(ctl, plant, 1.0)  # the first step starts from the metered power
    assert ctl.limit_w == pytest.approx(full_kw * 1000.0)
    step(ctl, plant, 4.0)
    assert ctl.limit_w == pytest.approx((full_kw - 3.0) * 1000.0)
    for now in range(5, 30):
        step(ctl, plant, float(now))
    assert ctl.limit_w == pytest.approx((full_kw - 10.0) * 1000.0)  # and holds there


def test_a_confirmed_target_that_the_meter_leaves_drifts() -> None:
    plant = Plant(DEVICES, base_w=0.0)
    ctl = controller(plant, deadband_pct=50.0)  # the controller does not correct: the site drifts
    target = ctl.set_target(plant.metered() / 1000.0, "operator", "d")
    step(ctl, plant, 1.0)
    step(ctl, plant, 2.0)
    assert target.state is TargetState.CONFIRMED
    plant.base_w = 5000.0  # a load the fleet does not see
    step(ctl, plant, 3.0)
    assert target.state is TargetState.DRIFTED  # drift_seconds = 0 here
