"""AI leases: the node stays on AI while its lease is active; only safety takes it off."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.config.loading import parse_config
from scheduler.config.schema import GuardConfig, PolicyConfig
from scheduler.control.guard import Guard
from scheduler.core.model import Event, Lease, Snapshot, Workload
from scheduler.policies import create_policy
from scheduler.policies.demand_response import DemandResponsePolicy
from scheduler.policies.leases import pinned_leases
from scheduler.policies.schedule import SchedulePolicy, ScheduleWindowConfig
from tests.scheduler.helpers import device
from tests.scheduler.policies.test_gpu_queue import CHEAP, decide, demand, gpu_node, gpu_snapshot

WALL = datetime(2024, 8, 20, 19, 30, tzinfo=UTC)  # the helpers' snapshot time


def lease(priority: int = 5, price: float = 1.0, **changes: object) -> Lease:
    base = Lease(
        id="acme",
        node="g1",
        queue="train",
        start=WALL - timedelta(hours=1),
        end=WALL + timedelta(hours=1),
        price_usd_per_hour=price,
        priority=priority,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def leased(*leases: Lease, events: tuple[Event, ...] = ()) -> Snapshot:
    """One GPU node mining, an empty queue, cheap power: without a lease it would mine."""
    snap = gpu_snapshot([gpu_node()], CHEAP, demand(0), current=Workload.mine("main"))
    return dataclasses.replace(snap, leases=leases, events=events)


def dr(priority: int, target_kw: float = 0.0) -> Event:
    return Event(
        "grid", WALL - timedelta(minutes=5), WALL + timedelta(hours=1), target_kw, None, priority
    )


def test_without_a_lease_the_node_mines_and_with_one_it_serves_ai_whatever_mining_pays() -> None:
    assert decide(leased()) == {"g1": ("mine(main)", "queue_empty")}
    assert decide(leased(lease(price=0.0))) == {"g1": ("ai(train)", "ai_lease")}


def test_the_lease_price_is_the_revenue_in_the_margin() -> None:
    for name in ("breakeven", "max-margin"):
        plan = create_policy(PolicyConfig(name=name)).plan(leased(lease(price=18.0)))
        (assignment,) = plan.assignments
        assert assignment.reason == "ai_lease"
        assert assignment.expected_margin_usd_per_hour == pytest.approx(18.0 - 3.0 * CHEAP / 1000)


def test_a_lease_outside_its_window_or_of_another_node_pins_nothing() -> None:
    later = lease(start=WALL + timedelta(minutes=1), end=WALL + timedelta(hours=2))
    over = lease(start=WALL - timedelta(hours=2), end=WALL)  # end is exclusive
    other = lease(node="g2")
    assert decide(leased(later, over, other)) == {"g1": ("mine(main)", "queue_empty")}


def test_only_a_dr_event_of_higher_priority_lifts_the_pin() -> None:
    assert decide(leased(lease(priority=5), events=(dr(5),))) == {"g1": ("ai(train)", "ai_lease")}
    assert decide(leased(lease(priority=5), events=(dr(6),))) == {
        "g1": ("mine(main)", "queue_empty")
    }


def test_overlapping_leases_the_highest_priority_wins() -> None:
    low = lease(priority=1, queue="train", id="low")
    high = lease(priority=9, queue="train", id="high", price=7.0)
    assert pinned_leases(leased(low, high))["g1"].id == "high"


def test_demand_response_sheds_a_leased_node_only_for_an_event_that_outranks_the_lease() -> None:
    asic = device("a", "S21")
    node = gpu_node()
    base = leased(lease(priority=5))
    snap = dataclasses.replace(
        base,
        devices={"a": asic, "g1": node},
        current={"a": Workload.mine("main"), "g1": Workload.mine("main")},
        samples={**base.samples},
    )
    policy = DemandResponsePolicy()
    same = dataclasses.replace(snap, events=(dr(5),))
    plan = policy.plan(same).by_device()
    assert (str(plan["g1"].workload), plan["g1"].reason) == ("ai(train)", "ai_lease")
    assert (str(plan["a"].workload), plan["a"].reason) == ("sleep", "dr_event")
    higher = dataclasses.replace(snap, events=(dr(6),))
    plan = policy.plan(higher).by_device()
    assert (str(plan["g1"].workload), plan["g1"].reason) == ("sleep", "dr_event")
    preview = policy.preview(snap, dr(6))
    assert "g1" in preview.shed
    assert "g1" not in policy.preview(snap, dr(5)).shed


def test_a_sleep_window_does_not_take_a_leased_node_off() -> None:
    window = ScheduleWindowConfig(name="all-day", start="00:00", end="23:59")
    plan = SchedulePolicy([window]).plan(leased(lease())).by_device()
    assert (str(plan["g1"].workload), plan["g1"].reason) == ("ai(train)", "ai_lease")


def test_the_guard_lets_a_lease_start_through_dwell_but_thermal_still_sleeps_the_node() -> None:
    snap = leased(lease())
    config = GuardConfig(min_dwell_seconds=3600.0, min_margin_gain_usd_per_hour=1000.0)
    guard = Guard(config, power_cap_w=1e9, last_switch_at={"g1": snap.now - 1.0})
    plan = create_policy(PolicyConfig(name="max-margin")).plan(snap)
    (kept,) = guard.apply(plan, snap).assignments
    assert (str(kept.workload), kept.reason) == ("ai(train)", "ai_lease")
    hot_sample = dataclasses.replace(snap.samples["g1"], temperature_c=200.0)
    hot = dataclasses.replace(snap, samples={"g1": hot_sample})
    (slept,) = guard.apply(plan, hot).assignments
    assert (str(slept.workload), slept.reason) == ("sleep", "thermal")


def config_with(leases: list[dict[str, object]]) -> dict[str, object]:
    return {
        "site": {"power_cap_kw": 100.0},
        "pools": [{"name": "main", "url": "stratum+tcp://main.invalid:3333", "user": "w"}],
        "queues": [
            {
                "name": "train",
                "pricing": "contract",
                "contract_rate_usd_per_gpu_hour": 2.0,
                "options": {"driver": "webhook", "url": "http://127.63.0.1:9/queue"},
            }
        ],
        "gpu_nodes": [
            {
                "id": "g1",
                "gpus": 4,
                "queues": ["train"],
                "pools": ["main"],
                "mining_hashrate_ths": 1.0,
                "nominal_power_w": 3000.0,
                "idle_power_w": 400.0,
            }
        ],
        "leases": leases,
    }


def test_lease_config_is_checked_and_becomes_the_model_lease() -> None:
    entry = {
        "id": "acme",
        "node": "g1",
        "queue": "train",
        "start": "2026-12-01T00:00:00-06:00",
        "end": "2027-01-01T00:00:00-06:00",
        "price_usd_per_hour": 18.0,
        "priority": 5,
    }
    config = parse_config(config_with([entry]), "<test>", environ={})
    (model,) = [entry.lease() for entry in config.leases]
    assert model.start == datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert (model.node, model.queue, model.priority) == ("g1", "train", 5)
    from scheduler.config.loading import ConfigError

    for bad, message in (
        ({"node": "nope"}, "unknown gpu node"),
        ({"queue": "infer"}, "is not a queue of its node"),
        ({"end": "2026-11-01T00:00:00-06:00"}, "end must be after start"),
        ({"start": "2026-12-01T00:00:00"}, "timezone"),
        ({"price_usd_per_hour": -1.0}, "greater than or equal"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config(config_with([{**entry, **bad}]), "<test>", environ={})
