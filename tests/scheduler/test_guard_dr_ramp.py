"""Guard: demand-response events and the ramp limit, with their reasons."""

from __future__ import annotations

from datetime import timedelta

from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.core.model import Event, Snapshot, Workload
from scheduler.policies.breakeven import BreakevenPolicy
from tests.scheduler.helpers import device, snapshot

DEVICES = [device(f"s21-{i}", "S21") for i in range(3)] + [device("s19", "S19j Pro")]


def with_fields(snap: Snapshot, **changes: object) -> Snapshot:
    return Snapshot(**{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, **changes})


def test_active_dr_event_sleeps_least_efficient_first_and_is_exempt_from_dwell() -> None:
    g = Guard(GuardConfig(min_dwell_seconds=3600), power_cap_w=1e9)
    g.last_switch_at = {d.id: 99.0 for d in DEVICES}  # every device just switched
    base = snapshot(DEVICES, 20.0)
    event = Event(
        "dr1", base.wall - timedelta(minutes=1), base.wall + timedelta(hours=1), target_kw=7.1
    )
    snap = with_fields(base, events=(event,))
    plan = g.apply(BreakevenPolicy().plan(snap), snap).by_device()
    asleep = sorted(d for d, a in plan.items() if a.workload == Workload.sleep())
    assert asleep == ["s19", "s21-0"]
    assert {plan[d].reason for d in asleep} == {"dr_event"}
    future = with_fields(
        base,
        events=(
            Event(
                "dr2",
                base.wall + timedelta(minutes=5),
                base.wall + timedelta(hours=1),
                target_kw=0.0,
            ),
        ),
    )
    assert all(
        a.workload.is_running for a in g.apply(BreakevenPolicy().plan(future), future).assignments
    )


def test_reduction_event_counts_from_nominal_power() -> None:
    g = Guard(GuardConfig(min_dwell_seconds=0), power_cap_w=1e9)
    base = snapshot(DEVICES, 20.0)
    event = Event(
        "dr3", base.wall - timedelta(minutes=1), base.wall + timedelta(hours=1), reduction_kw=3.0
    )
    snap = with_fields(base, events=(event,))
    plan = g.apply(BreakevenPolicy().plan(snap), snap).by_device()
    assert [d for d, a in plan.items() if not a.workload.is_running] == ["s19"]


def test_ramp_limit_spreads_wakes_over_minutes_but_not_safety() -> None:
    g = Guard(GuardConfig(min_dwell_seconds=0, ramp_kw_per_minute=7.5), power_cap_w=1e9)
    asleep = {d.id: Workload.sleep() for d in DEVICES}
    snap = snapshot(DEVICES, 20.0, asleep, now=100.0)
    plan = g.apply(BreakevenPolicy().plan(snap), snap).by_device()
    woken = [d for d, a in plan.items() if a.workload.is_running]
    held = [d for d, a in plan.items() if a.reason == "ramp_limit"]
    assert len(woken) == 2 and len(held) == 2
    current = {d: plan[d].workload for d in plan}
    again = snapshot(DEVICES, 20.0, current, now=130.0)  # same minute: nothing left
    plan2 = g.apply(BreakevenPolicy().plan(again), again).by_device()
    assert sum(a.reason == "ramp_limit" for a in plan2.values()) == 2
    later = snapshot(DEVICES, 20.0, current, now=161.0)
    plan3 = g.apply(BreakevenPolicy().plan(later), later).by_device()
    assert all(a.workload.is_running for a in plan3.values())
    hot = snapshot(
        DEVICES,
        20.0,
        {d.id: Workload.mine("main") for d in DEVICES},
        now=170.0,
        temperatures={d.id: 95.0 for d in DEVICES},
    )
    assert {a.reason for a in g.apply(BreakevenPolicy().plan(hot), hot).assignments} == {"thermal"}
