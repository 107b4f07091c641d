"""Operator control: modes, overrides under the Guard's safety rules, curtail, durability, recovery."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.config.schema import GuardConfig, PolicyConfig
from scheduler.control.service import (
    Actor,
    ControlledGuard,
    ControlledPolicy,
    ControlledReconciler,
    ControlService,
    Mode,
)
from scheduler.core.model import Device, Outcome, OutcomeStatus, Plan, Workload
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.policies import available_policies
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import WALL
from tests.scheduler.helpers import device, snapshot

ACTOR = Actor("ops", "operator", "127.70.0.9:1", "PUT", "/v1/test")
CHEAP = 20.0
SPIKE = 2000.0
MINE = Workload.mine("main")
SLEEP = Workload.sleep()


@pytest.fixture
def fleet() -> list[Device]:
    return [device("a", "S21"), device("b", "S19j Pro"), device("c", "S21 XP")]


@pytest.fixture
def control(tmp_path: Path, fleet: list[Device]) -> ControlService:
    store = ControlStore.open(tmp_path / "w.sqlite")
    return ControlService(
        store,
        {d.id: d for d in fleet},
        default_policy="breakeven",
        policies=list(available_policies()),
        wall_clock=lambda: WALL,
    )


def policy(control: ControlService) -> ControlledPolicy:
    return ControlledPolicy(control, available_policies(), PolicyConfig())


def guard(control: ControlService, cap_w: float = 1e9, dwell_s: float = 0.0) -> ControlledGuard:
    g = ControlledGuard(GuardConfig(min_dwell_seconds=dwell_s), power_cap_w=cap_w)
    g.control = control
    return g


def by_device(plan: Plan) -> dict[str, tuple[str, str]]:
    return {a.device_id: (str(a.workload), a.reason) for a in plan.assignments}


def test_auto_follows_the_policy_and_overrides_win(
    control: ControlService, fleet: list[Device]
) -> None:
    snap = snapshot(fleet, CHEAP)
    assert {r for _, r in by_device(policy(control).plan(snap)).values()} == {
        "price_below_breakeven"
    }
    control.put_override("b", "sleep", 3600, "maintenance", ACTOR)
    plan = by_device(guard(control).apply(policy(control).plan(snap), snap))
    assert plan["b"] == ("sleep", "override")
    assert plan["a"] == ("mine(main)", "price_below_breakeven")


def test_an_expired_override_no_longer_applies(
    control: ControlService, fleet: list[Device]
) -> None:
    control.put_override("b", "sleep", 60, "", ACTOR)
    later = dataclasses.replace(snapshot(fleet, CHEAP), wall=WALL + timedelta(seconds=61))
    assert control.overrides(WALL + timedelta(seconds=59)) != []
    assert by_device(policy(control).plan(later))["b"][1] == "price_below_breakeven"


def test_manual_holds_and_paused_ignores_overrides(
    control: ControlService, fleet: list[Device]
) -> None:
    snap = snapshot(fleet, SPIKE)  # the policy would sleep everything
    control.set_mode(Mode.MANUAL, ACTOR)
    control.put_override("a", "sleep", 3600, "", ACTOR)
    plan = by_device(policy(control).plan(snap))
    assert plan == {
        "a": ("sleep", "override"),
        "b": ("mine(main)", "manual"),
        "c": ("mine(main)", "manual"),
    }
    control.set_mode(Mode.PAUSED, ACTOR)
    assert {r for _, r in by_device(policy(control).plan(snap)).values()} == {"paused"}


def test_an_override_cannot_lift_the_thermal_limit_or_the_stale_price_rule(
    control: ControlService, fleet: list[Device]
) -> None:
    control.put_override("a", "mine(main)", 3600, "", ACTOR)
    hot = snapshot(fleet, CHEAP, temperatures={"a": 99.0})
    assert by_device(guard(control).apply(policy(control).plan(hot), hot))["a"] == (
        "sleep",
        "thermal",
    )
    stale = snapshot(fleet, None)
    assert by_device(guard(control).apply(policy(control).plan(stale), stale))["a"] == (
        "sleep",
        "stale_price",
    )


def test_an_override_cannot_lift_the_site_power_cap(
    control: ControlService, fleet: list[Device]
) -> None:
    asleep = {d.id: SLEEP for d in fleet}
    snap = snapshot(fleet, SPIKE, asleep)
    for d in fleet:
        control.put_override(d.id, "mine(main)", 3600, "", ACTOR)
    cap_w = fleet[0].nominal_power_w + 200.0  # room for one machine and the sleepers
    plan = by_device(guard(control, cap_w=cap_w).apply(policy(control).plan(snap), snap))
    power = {
        d.id: d.nominal_power_w if plan[d.id][0] == "mine(main)" else d.sleep_power_w for d in fleet
    }
    assert sum(power.values()) <= cap_w
    assert sorted(r for _, r in plan.values()) == ["override", "power_cap", "power_cap"]


def test_overrides_skip_dwell_only(control: ControlService, fleet: list[Device]) -> None:
    g = guard(control, dwell_s=3600.0)
    snap = snapshot(fleet, CHEAP, now=100.0)
    g.last_switch_at = {d.id: 99.0 for d in fleet}
    control.put_override("a", "sleep", 3600, "", ACTOR)
    plan = by_device(g.apply(policy(control).plan(snapshot(fleet, SPIKE, now=100.0)), snap))
    assert plan["a"] == ("sleep", "override")
    assert plan["b"][1] == "min_dwell"


def test_curtail_full_and_to_a_target(control: ControlService, fleet: list[Device]) -> None:
    snap = snapshot(fleet, CHEAP)
    control.set_curtail(None, 600, ACTOR)
    assert set(by_device(guard(control).apply(policy(control).plan(snap), snap)).values()) == {
        ("sleep", "curtail")
    }
    total_kw = sum(d.nominal_power_w for d in fleet) / 1000
    least_efficient = max(fleet, key=lambda d: d.efficiency_j_per_th)
    target_kw = total_kw - least_efficient.nominal_power_w / 1000 + 0.1
    control.set_curtail(target_kw, 600, ACTOR)
    plan = by_device(guard(control).apply(policy(control).plan(snap), snap))
    assert plan[least_efficient.id] == ("sleep", "curtail")
    assert sum(1 for w, _ in plan.values() if w == "sleep") == 1
    control.set_curtail(total_kw * 10, 600, ACTOR)  # above the site: no effect
    plan = by_device(guard(control).apply(policy(control).plan(snap), snap))
    assert {r for _, r in plan.values()} == {"price_below_breakeven"}


def test_changes_survive_a_restart(
    tmp_path: Path, control: ControlService, fleet: list[Device]
) -> None:
    control.set_mode(Mode.DRY_RUN, ACTOR)
    control.put_override("c", "sleep", 3600, "fan", ACTOR)
    control.set_curtail(12.5, 600, ACTOR)
    control.store.close()
    with ControlStore.open(tmp_path / "w.sqlite") as store:
        again = ControlService(
            store,
            {d.id: d for d in fleet},
            default_policy="breakeven",
            policies=["breakeven"],
            wall_clock=lambda: WALL,
        )
        assert again.mode is Mode.DRY_RUN
        [override] = again.overrides()
        assert (override.device_id, override.workload, override.note) == ("c", SLEEP, "fan")
        curtail = again.curtail()
        assert curtail is not None and curtail.target_kw == 12.5
        assert [r.status_code for r in store.api_audit()] == [200, 200, 200]


class CountingControl:
    """A MinerControl that records what it was asked and confirms."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        self.applied.append((device.id, str(workload)))
        return Outcome(device.id, workload, OutcomeStatus.CONFIRMED, workload)


async def run_reconcile(
    control: ControlService,
    fleet: list[Device],
    plan: Plan,
    snap_price: float,
    current: dict[str, Workload] | None = None,
) -> tuple[CountingControl, ControlledReconciler]:
    counting = CountingControl()
    state = FleetState(fleet)
    async with ControlledReconciler(
        {d.id: counting for d in fleet},
        control.store,
        Metrics(state, clock=lambda: 0.0),
        control=control,
    ) as reconciler:
        reconciler.reconcile(plan, snapshot(fleet, snap_price, current))
        await reconciler.wait_idle()
        reconciler.reconcile(plan, snapshot(fleet, snap_price, current))
        await reconciler.wait_idle()
    return counting, reconciler


async def test_dry_run_logs_each_command_once_and_sends_nothing(
    control: ControlService, fleet: list[Device]
) -> None:
    control.set_mode(Mode.DRY_RUN, ACTOR)
    snap = snapshot(fleet, SPIKE)
    plan = guard(control).apply(policy(control).plan(snap), snap)
    counting, _ = await run_reconcile(control, fleet, plan, SPIKE)
    assert counting.applied == []
    commands = control.store.audit(kind="command")
    assert len(commands) == 3
    assert {(c.outcome, c.detail) for c in commands} == {("skipped", "dry-run: not sent")}


async def test_paused_and_dry_run_still_send_safety(
    control: ControlService, fleet: list[Device]
) -> None:
    for mode in (Mode.PAUSED, Mode.DRY_RUN):
        control.set_mode(mode, ACTOR)
        hot = snapshot(fleet, CHEAP, temperatures={"b": 99.0})
        plan = guard(control).apply(policy(control).plan(hot), hot)
        counting = CountingControl()
        async with ControlledReconciler(
            {d.id: counting for d in fleet},
            control.store,
            Metrics(FleetState(fleet), clock=lambda: 0.0),
            control=control,
        ) as reconciler:
            reconciler.reconcile(plan, hot)
            await reconciler.wait_idle()
        assert counting.applied == [("b", "sleep")], mode


async def test_recovery_reads_back_and_never_resends(
    control: ControlService, fleet: list[Device]
) -> None:
    store = control.store
    done = store.begin_intent(
        at=WALL, device_id="a", workload=SLEEP, reason="price_above_breakeven"
    )
    lost = store.begin_intent(
        at=WALL, device_id="b", workload=SLEEP, reason="price_above_breakeven"
    )
    current = {"a": SLEEP, "b": MINE, "c": MINE}
    plan = Plan(0.0, ())  # nothing wanted: only recovery runs
    counting, reconciler = await run_reconcile(control, fleet, plan, CHEAP, current)
    assert counting.applied == []
    assert store.open_intents() == []
    outcomes = {i.id: o for i, o in reconciler.recovered}
    assert outcomes == {done: "confirmed", lost: "unconfirmed"}
    records = {r.id: r for r in store.audit(kind="command")}
    assert "not resent" in records[lost].detail


def test_daemon_is_not_ready_before_it_runs(tmp_path: Path) -> None:
    from scheduler.daemon import Daemon
    from tests.scheduler.api_fixtures import small_config

    daemon = Daemon(small_config(tmp_path), feeds=[])
    assert daemon.readiness() == {
        "config": True,
        "store": False,
        "inputs": False,
        "reconciled": False,
    }
