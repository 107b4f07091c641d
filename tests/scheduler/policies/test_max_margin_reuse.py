"""max-margin reuses its grouping of devices between calls: plans stay those of a fresh policy."""

from __future__ import annotations

import random

import pytest

from scheduler.core.model import Assignment, Snapshot, Workload
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import device, snapshot
from tests.scheduler.policies.test_gpu_queue import gpu_node

WORKLOADS = (
    lambda: Workload.mine("main"),
    lambda: Workload.mine("backup"),
    lambda: Workload.mine("main", 0.8),
    Workload.sleep,
    Workload.off,
)


_BANDS = {"sleep_band_fraction": 0.5, "wake_band_fraction": 0.5}


def _fields(assignment: Assignment) -> tuple[object, ...]:
    return (
        assignment.device_id,
        assignment.workload,
        assignment.reason,
        assignment.expected_margin_usd_per_hour,
        assignment.switching_cost_usd,
        assignment.drain_seconds,
    )


def _plan(policy: MaxMarginPolicy, snap: Snapshot) -> list[tuple[object, ...]]:
    return [_fields(a) for a in policy.plan(snap).assignments]


@pytest.mark.parametrize("seed", range(8))
def test_a_long_lived_policy_plans_as_a_fresh_one(seed: int) -> None:
    """Random ticks: workloads change (new equal objects, shared ones, missing), devices come and go."""
    rng = random.Random(seed)
    fleet = [device(f"d{i}", rng.choice(("S21", "S19j Pro"))) for i in range(40)]
    fleet.append(gpu_node("g1"))
    levels = (0.8, 1.0)
    kept = MaxMarginPolicy(power_levels=levels)
    shared = {d.id: Workload.mine("main") for d in fleet}
    for tick in range(60):
        devices = fleet if rng.random() < 0.8 else rng.sample(fleet, rng.randrange(1, len(fleet)))
        change = rng.random()
        if change < 0.3:
            current = dict(shared)  # the same objects as the last tick
        elif change < 0.5:
            current = {
                d: Workload(w.kind, w.pool, w.power_level, w.queue) for d, w in shared.items()
            }
        else:  # some devices switch: same ids in the same order, other values
            shared = {
                d: rng.choice(WORKLOADS)() if rng.random() < 0.2 else w for d, w in shared.items()
            }
            current = dict(shared)
            if rng.random() < 0.2:
                for d in rng.sample(sorted(current), 3):
                    del current[d]
        ids = {x.id for x in devices}
        current = {d: w for d, w in current.items() if d in ids}
        snap = snapshot(devices, rng.uniform(20.0, 120.0), current, now=float(tick))
        if rng.random() < 0.5:
            cap_w = rng.uniform(0.3, 1.1) * sum(d.nominal_power_w for d in devices)
            snap = Snapshot(
                **{**{f: getattr(snap, f) for f in snap.__dataclass_fields__}, "power_cap_w": cap_w}
            )
        kept_plan = _plan(kept, snap)
        assert kept_plan == _plan(MaxMarginPolicy(power_levels=levels), snap), tick
        assert sorted(a[0] for a in kept_plan) == sorted(ids), tick  # GPU node included


def test_same_workloads_under_other_device_ids_are_regrouped() -> None:
    """Equal lists of workloads under swapped ids: the grouping of the last call does not hold."""
    policy = MaxMarginPolicy(**_BANDS)
    devices = [device("a"), device("b")]
    first = {"a": Workload.mine("main"), "b": Workload.sleep()}
    swapped = {"b": Workload.mine("main"), "a": Workload.sleep()}
    policy.plan(snapshot(devices, 110.0, first))
    snap = snapshot(devices, 110.0, swapped)
    assert _plan(policy, snap) == _plan(MaxMarginPolicy(**_BANDS), snap)
    decided = {a.device_id: a.workload for a in policy.plan(snap).assignments}
    assert decided == {"a": Workload.sleep(), "b": Workload.mine("main")}  # both held by the band


def test_assignments_built_fast_equal_the_dataclass() -> None:
    """The slot-filling path builds objects equal to Assignment(...), frozen like them."""
    snap = snapshot([device("a"), device("b", "S19j Pro")], 50.0)
    for built in MaxMarginPolicy().plan(snap).assignments:
        expected = Assignment(
            built.device_id,
            built.workload,
            built.reason,
            built.expected_margin_usd_per_hour,
            detail=built.detail,
        )
        assert "break-even" in built.detail
        assert type(built) is Assignment
        assert built == expected
        assert hash(built) == hash(expected)
        assert repr(built) == repr(expected)
        with pytest.raises(AttributeError):
            built.reason = "changed"  # type: ignore[misc]
