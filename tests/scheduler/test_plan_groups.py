"""Grouped plans: one entry per group of devices, read as the tuple of the same assignments."""

from __future__ import annotations

import pytest

from scheduler.core.model import Assignment, AssignmentGroup, GroupedAssignments, Plan, Workload

MINE = Workload.mine("main")
SLEEP = Workload.sleep()
GROUPS = (
    AssignmentGroup(("a", "b", "c"), MINE, "price_below_breakeven", 1.5),
    AssignmentGroup((), SLEEP, "empty", 0.0),
    AssignmentGroup(("d",), SLEEP, "power_cap", -0.25, switching_cost_usd=2.0, drain_seconds=30),
)
EXPECTED = (
    Assignment("a", MINE, "price_below_breakeven", 1.5),
    Assignment("b", MINE, "price_below_breakeven", 1.5),
    Assignment("c", MINE, "price_below_breakeven", 1.5),
    Assignment("d", SLEEP, "power_cap", -0.25, 2.0, 30.0),
)


def test_a_grouped_plan_reads_as_its_assignments_in_order() -> None:
    plan = Plan.grouped(5.0, GROUPS)
    assert isinstance(plan.assignments, GroupedAssignments)
    assert len(plan.assignments) == 4
    assert list(plan.assignments) == list(EXPECTED)
    assert [plan.assignments[i] for i in range(4)] == list(EXPECTED)
    assert plan.assignments[-1] == EXPECTED[-1]
    assert plan.assignments[1:3] == EXPECTED[1:3]
    with pytest.raises(IndexError):
        plan.assignments[4]
    assert plan.by_device() == {a.device_id: a for a in EXPECTED}
    for built in plan.assignments:
        assert type(built) is Assignment
        assert hash(built) == hash(EXPECTED["abcd".index(built.device_id)])
        with pytest.raises(AttributeError):
            built.reason = "changed"  # type: ignore[misc]


def test_a_grouped_plan_equals_the_tuple_plan_of_the_same_assignments() -> None:
    grouped = Plan.grouped(5.0, GROUPS)
    flat = Plan(created_at=5.0, assignments=EXPECTED)
    assert grouped == flat
    assert flat == grouped
    assert hash(grouped) == hash(flat)
    assert grouped != Plan(created_at=5.0, assignments=EXPECTED[:3])
    assert grouped != Plan(created_at=5.0, assignments=(*EXPECTED[:3], EXPECTED[0]))
    assert Plan.grouped(1.0, ()).assignments == ()
    assert len(Plan.grouped(1.0, ()).assignments) == 0


def test_groups_of_a_tuple_plan_are_one_per_assignment() -> None:
    flat = Plan(created_at=5.0, assignments=EXPECTED)
    groups = flat.groups()
    assert [g.device_ids for g in groups] == [("a",), ("b",), ("c",), ("d",)]
    assert Plan.grouped(5.0, groups) == flat
    assert Plan.grouped(5.0, GROUPS).groups() == GROUPS
