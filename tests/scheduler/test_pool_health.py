"""Pool health from the miners' reports: the rule, the recovery dwell, and the policies' failover."""

from __future__ import annotations

import dataclasses

import pytest

from drivers.asic.cgminer_parse import parse_pools, pools_alive
from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.core.model import DeviceStatus, Sample, Workload
from scheduler.core.pool_health import PoolHealth, seen_alive
from scheduler.policies.breakeven import BreakevenPolicy
from tests.scheduler.helpers import device, snapshot

UP = DeviceStatus(reachable=True)
DOWN = DeviceStatus(reachable=False, last_error="timeout")


def sample(device_id: str, *report: tuple[str, bool]) -> Sample:
    return Sample(device_id, 0.0, Workload.mine("main"), 3500.0, 200e12, pools_alive=report)


def test_pools_alive_reads_status_and_leaves_disabled_pools_out() -> None:
    rows = [
        {"POOL": 0, "URL": "stratum+tcp://a:3333", "Status": "Dead", "Priority": 0},
        {"POOL": 1, "URL": "stratum+tcp://b:3333", "Status": "Alive", "Priority": 1},
        {"POOL": 2, "URL": "stratum+tcp://c:3333", "Status": "Disabled", "Priority": 2},
    ]
    assert pools_alive(parse_pools(rows)) == [
        ("stratum+tcp://a:3333", False),
        ("stratum+tcp://b:3333", True),
    ]


def test_a_pool_is_alive_when_one_reachable_miner_sees_it_alive() -> None:
    samples = {
        "a": sample("a", ("main", False), ("backup", True)),
        "b": sample("b", ("main", True)),
        "c": sample("c", ("main", False), ("other-url", True)),
    }
    status = {"a": UP, "b": UP, "c": UP}
    assert seen_alive(samples, status, ["main", "backup", "unused"]) == {
        "main": True,
        "backup": True,
    }
    status["b"] = DOWN  # the last reading of an unreachable miner does not count
    assert seen_alive(samples, status, ["main", "backup"]) == {"main": False, "backup": True}


def test_down_at_once_up_only_after_the_recovery_dwell() -> None:
    health = PoolHealth(["main", "backup"], recovery_seconds=60.0)
    status = {"a": UP}
    alive = {"a": sample("a", ("main", True), ("backup", True))}
    dead = {"a": sample("a", ("main", False), ("backup", True))}
    assert health.update(alive, status, 0.0) == {"main": True, "backup": True}
    assert health.update(alive, status, 1.0) == {}
    assert health.update(dead, status, 2.0) == {"main": False}
    assert health.update(alive, status, 3.0) == {}  # seen alive, still counted down
    assert health.alive_since("main") == 3.0
    assert health.update(dead, status, 30.0) == {}  # flapped: the dwell starts again
    assert health.alive_since("main") is None
    assert health.update(alive, status, 31.0) == {}
    assert health.update(alive, status, 90.0) == {}
    assert health.update(alive, status, 91.0) == {"main": True}
    assert health.up == {"main": True, "backup": True}


def test_unseen_pools_keep_their_state_and_bad_dwell_is_refused() -> None:
    health = PoolHealth(["main"], recovery_seconds=0.0)
    assert health.update({}, {}, 0.0) == {}
    assert health.up == {}
    with pytest.raises(ValueError, match="recovery_seconds"):
        PoolHealth(["main"], recovery_seconds=-1.0)


def test_breakeven_fails_over_to_the_first_pool_up_and_sleeps_with_none() -> None:
    devices = [device("s21-1")]
    snap = snapshot(devices, 20.0)
    policy = BreakevenPolicy()
    (kept,) = policy.plan(snap).assignments
    assert (str(kept.workload), kept.reason) == ("mine(main)", "price_below_breakeven")
    snap = dataclasses.replace(snap, pools_up={"main": False})
    (moved,) = policy.plan(snap).assignments
    assert (str(moved.workload), moved.reason) == ("mine(backup)", "pool_down")
    snap = dataclasses.replace(snap, pools_up={"main": False, "backup": False})
    (slept,) = policy.plan(snap).assignments
    assert (str(slept.workload), slept.reason) == ("sleep", "pools_down")


def test_guard_never_holds_a_move_off_a_dead_pool() -> None:
    devices = [device("s21-1")]
    snap = dataclasses.replace(snapshot(devices, 20.0), pools_up={"main": False})
    config = GuardConfig(min_dwell_seconds=3600.0, min_margin_gain_usd_per_hour=100.0)
    guard = Guard(config, power_cap_w=1e6, last_switch_at={"s21-1": snap.now - 1.0})
    (moved,) = guard.apply(BreakevenPolicy().plan(snap), snap).assignments
    assert (str(moved.workload), moved.reason) == ("mine(backup)", "pool_down")
    healthy = snapshot(devices, 20.0)  # on main, main up
    plan = dataclasses.replace(
        BreakevenPolicy().plan(snap), assignments=(dataclasses.replace(moved, reason="other"),)
    )
    (held,) = guard.apply(plan, healthy).assignments
    assert held.reason == "min_dwell"  # any other reason is held by the dwell


@pytest.mark.system
async def test_the_cgminer_driver_reports_each_enabled_pool_by_name_over_tcp() -> None:
    from drivers.asic.cgminer import CgminerDriver
    from drivers.asic.config import CgminerOptions
    from drivers.sim.site import SimSite
    from scheduler.core.model import Pool

    pools = {
        "main": Pool("main", "stratum+tcp://main.invalid:3333", "w"),
        "backup": Pool("backup", "stratum+tcp://backup.invalid:3333", "w"),
    }
    stray = Pool("stray", "stratum+tcp://stray.invalid:3333", "w")  # on the miner, not configured
    devices = [
        dataclasses.replace(device(f"s21-{i}"), address=f"127.63.6.{i}", port=0) for i in (1, 2)
    ]
    async with SimSite(devices, [pools["main"], pools["backup"], stray], port=0) as site:
        driver = CgminerDriver(pools, CgminerOptions(timeout_seconds=1.0))
        first, second = site.devices
        site.miners[first.id].set_pool_url_alive(pools["main"].url, False)
        site.miners[first.id].handle("disablepool", "2")  # disabled rows are not reported
        one = await driver.collect(first)
        two = await driver.collect(second)
        assert one.pools_alive == (("main", False), ("backup", True))
        assert one.workload == Workload.mine("backup")  # the firmware failed over by itself
        assert two.pools_alive == (("main", True), ("backup", True), (stray.url, True))
        again = await driver.collect(first)
        assert again.pools_alive is one.pools_alive  # one shared tuple per distinct report
        health = PoolHealth(["main", "backup"], recovery_seconds=0.0)
        samples = {first.id: one, second.id: two}
        assert health.update(samples, {first.id: UP, second.id: UP}, 0.0) == {
            "main": True,
            "backup": True,
        }
        assert health.update({first.id: one}, {first.id: UP}, 1.0) == {"main": False}
