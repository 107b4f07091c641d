"""Maintenance windows: the policies leave their machines alone; bounded, stored, audited."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.config.schema import PolicyConfig
from scheduler.control.maintenance import MAX_WINDOW_SECONDS, MaintenanceWindows
from scheduler.control.service import Actor, ControlledPolicy, ControlRejected, ControlService
from scheduler.core.model import Device
from scheduler.policies import available_policies
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import WALL
from tests.scheduler.helpers import device, snapshot

ACTOR = Actor("ops", "operator", "127.70.0.9:1", "PUT", "/v1/maintenance/x")
SPIKE = 2000.0  # the policy would put every machine to sleep
RACKS = {"a": ("R1", 1), "b": ("R1", 2), "c": ("R2", 1)}


@pytest.fixture
def fleet() -> list[Device]:
    return [device("a", "S21"), device("b", "S19j Pro"), device("c", "S21 XP")]


@pytest.fixture
def store(tmp_path: Path) -> ControlStore:
    return ControlStore.open(tmp_path / "w.sqlite")


def windows(store: ControlStore, fleet: list[Device], wall: list[object]) -> MaintenanceWindows:
    return MaintenanceWindows(
        store,
        {d.id: d for d in fleet},
        lambda: RACKS,
        wall_clock=lambda: wall[0],  # type: ignore[return-value]
    )


async def test_a_rack_in_maintenance_is_left_out_of_every_plan(
    store: ControlStore, fleet: list[Device]
) -> None:
    control = ControlService(
        store,
        {d.id: d for d in fleet},
        default_policy="breakeven",
        policies=list(available_policies()),
        wall_clock=lambda: WALL,
    )
    policy = ControlledPolicy(control, available_policies(), PolicyConfig())
    maintenance = windows(store, fleet, [WALL])
    policy.in_maintenance = maintenance.devices_in_maintenance
    snap = snapshot(fleet, SPIKE)
    assert {a.device_id for a in policy.plan(snap).assignments} == {"a", "b", "c"}
    window, error = await maintenance.open("rack:R1", 3600, "fans", ACTOR)
    assert window.devices == ("a", "b") and error is None
    assert {a.device_id for a in policy.plan(snap).assignments} == {"c"}
    control.put_override("a", "mine(main)", 600, "", ACTOR)  # an override does not reach it
    assert {a.device_id for a in policy.plan(snap).assignments} == {"c"}
    assert maintenance.devices_in_maintenance(WALL + timedelta(seconds=3601)) == frozenset()


async def test_windows_are_bounded_stored_and_audited(
    store: ControlStore, fleet: list[Device]
) -> None:
    wall: list[object] = [WALL]
    maintenance = windows(store, fleet, wall)
    with pytest.raises(ControlRejected) as too_long:
        await maintenance.open("a", MAX_WINDOW_SECONDS + 1, "", ACTOR)
    assert too_long.value.status_code == 422
    for target in ("nope", "rack:R9"):
        with pytest.raises(ControlRejected) as unknown:
            await maintenance.open(target, 60, "", ACTOR)
        assert unknown.value.status_code == 404
    await maintenance.open("c", 600, "x" * 1000, ACTOR)
    reopened = windows(store, fleet, wall)  # after a restart
    [kept] = reopened.windows()
    assert kept.target == "c" and len(kept.note) == 256
    assert reopened.devices_in_maintenance() == frozenset({"c"})
    await reopened.end("c", ACTOR)
    with pytest.raises(ControlRejected):
        await reopened.end("c", ACTOR)
    rows = store.api_audit()
    assert [json.loads(r.after) is None for r in rows] == [True, False]
    wall[0] = WALL + timedelta(hours=1)
    assert windows(store, fleet, wall).windows() == []
