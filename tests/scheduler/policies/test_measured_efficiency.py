"""Measured efficiency: max-margin and DR rank machines by their own smoothed J/TH where trustworthy."""

from __future__ import annotations

from datetime import timedelta

from scheduler.core.model import Event, Sample, Snapshot, Workload
from scheduler.core.power import planned_power_w
from scheduler.policies.demand_response import DemandResponsePolicy
from scheduler.policies.efficiency import MeasuredEfficiency
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import device, snapshot

XP = device("a", "S21 XP")  # nominal 13.5 J/TH, measured 20 below (a worn machine)
S21 = device("b", "S21")  # nominal 17.5 J/TH, measured as nominal
MINING = Workload.mine("main")


def _at(now: float, *, estimated: bool = False, **changes: object) -> Snapshot:
    base = snapshot([XP, S21], 40.0, {"a": MINING, "b": MINING}, now=now)
    samples = {
        "a": Sample(
            "a", now, MINING, power_w=5400.0, hashrate_hs=270e12, power_estimated=estimated
        ),
        "b": Sample("b", now, MINING, power_w=3500.0, hashrate_hs=200e12),
    }
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    return Snapshot(**{**fields, "samples": samples, **changes})


def _running(plan_assignments: object) -> set[str]:
    return {a.device_id for a in plan_assignments if a.workload.is_running}  # type: ignore[attr-defined]


def test_measured_efficiency_is_smoothed_and_needs_trustworthy_samples() -> None:
    model = MeasuredEfficiency(min_samples=3)
    for index in range(3):
        model.observe(_at(100.0 + index))
    assert model.j_per_th(XP) == 20.0 and model.j_per_th(S21) == 17.5
    assert [d.id for d in model.least_efficient_first([S21, XP])] == ["a", "b"]
    estimated = MeasuredEfficiency(min_samples=1)
    estimated.observe(_at(100.0, estimated=True))
    assert estimated.j_per_th(XP) == 13.5  # estimated power: the nominal figure stands
    model.observe(_at(102.0))  # the same reading time again: not folded in twice
    assert model.samples_of("a") == 3


def test_max_margin_keeps_the_machine_that_measures_better_under_the_cap() -> None:
    policy = MaxMarginPolicy()
    cap = 4000.0  # one machine at a time
    first = policy.plan(_at(100.0, power_cap_w=cap))
    assert _running(first.assignments) == {"a"}  # nominal: the XP is the more efficient
    for index in range(1, 4):
        plan = policy.plan(_at(100.0 + index, power_cap_w=cap))
    assert _running(plan.assignments) == {"b"}  # measured: the XP draws 20 J/TH


def test_demand_response_sheds_the_least_efficient_by_measurement() -> None:
    policy = DemandResponsePolicy()
    for index in range(3):
        policy.plan(_at(100.0 + index))
    base = _at(104.0)
    event = Event("e", base.wall - timedelta(minutes=1), base.wall + timedelta(hours=1), 4.0)
    plan = policy.plan(_at(104.0, events=(event,)))
    assert _running(plan.assignments) == {"b"}
    preview = policy.preview(_at(105.0), event)
    assert preview.shed == ("a",)


def test_a_machine_measured_below_nominal_power_is_still_counted_as_the_guard_counts_it() -> None:
    # Two S21 that measure 3,000 W (nominal 3,500 W) under a 6,500 W cap: by measurement both
    # fit, but the Guard counts nominal power and would put one to sleep itself.
    first, second = device("a", "S21"), device("b", "S21")
    policy = MaxMarginPolicy()

    def at(now: float) -> Snapshot:
        base = snapshot([first, second], 40.0, {"a": MINING, "b": MINING}, now=now)
        samples = {
            d: Sample(d, now, MINING, power_w=3000.0, hashrate_hs=200e12) for d in ("a", "b")
        }
        fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
        return Snapshot(**{**fields, "samples": samples, "power_cap_w": 6500.0})

    for index in range(4):
        plan = policy.plan(at(100.0 + index))
    assert len(_running(plan.assignments)) == 1
    devices = {"a": first, "b": second}
    assert sum(planned_power_w(devices[a.device_id], a.workload) for a in plan.assignments) <= 6500
