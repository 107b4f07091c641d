"""Durations survive wall-clock steps; the number of active overrides is capped.

The ControlService gets an injected wall clock and an injected monotonic clock;
the wall clock is stepped (+1 h, -1 h) while a 600 s curtail and an override
run: both still end after the time they were given, one log line names the
step, and a restart reads the re-anchored ends.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from scheduler.api.auth import Role
from scheduler.control.service import Actor, ControlRejected, ControlService
from scheduler.core.model import Device
from scheduler.policies import available_policies
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import WALL, Tokens, build_app
from tests.scheduler.helpers import device
from tests.scheduler.test_api_security import make_view

ACTOR = Actor("ops", "operator", "127.70.0.9:1", "PUT", "/v1/test")


class Clocks:
    """A monotonic clock and a wall clock that runs with it until it is stepped."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.step = timedelta(0)

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return WALL + timedelta(seconds=self.mono - 1000.0) + self.step


def service(
    store: ControlStore, fleet: list[Device], clocks: Clocks, **extra: int
) -> ControlService:
    return ControlService(
        store,
        {d.id: d for d in fleet},
        default_policy="breakeven",
        policies=list(available_policies()),
        wall_clock=clocks.wall,
        clock=clocks.monotonic,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("step_hours", [1, -1], ids=["forward", "back"])
def test_a_600_s_curtail_lasts_600_s_across_a_wall_clock_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step_hours: int
) -> None:
    fleet = [device("a", "S21"), device("b", "S19j Pro")]
    clocks = Clocks()
    store = ControlStore.open(tmp_path / "w.sqlite")
    control = service(store, fleet, clocks)
    control.set_curtail(None, 600.0, ACTOR)
    control.put_override("b", "sleep", 900.0, "maintenance", ACTOR)

    with caplog.at_level(logging.WARNING, logger="scheduler.control.service"):
        clocks.mono += 100.0
        clocks.step = timedelta(hours=step_hours)  # NTP, an operator, a VM resume...
        for _ in range(5):  # every tick reads the curtail and the overrides
            assert control.curtail(clocks.wall()) is not None
            assert [r.device_id for r in control.overrides(clocks.wall())] == ["b"]
    steps = [r.getMessage() for r in caplog.records if "wall clock stepped" in r.getMessage()]
    assert len(steps) == 1
    assert f"{3600 * step_hours:+.1f} s" in steps[0]

    clocks.mono += 499.0  # 599 s after it began
    assert control.curtail(clocks.wall()) is not None
    clocks.mono += 2.0  # 601 s
    assert control.curtail(clocks.wall()) is None
    assert control.overrides(clocks.wall()) != []
    clocks.mono += 300.0  # 901 s
    assert control.overrides(clocks.wall()) == []

    # A restart reads the ends as they were re-anchored.
    store.close()
    with ControlStore.open(tmp_path / "w.sqlite") as reopened:
        clocks.mono -= 302.0  # back to 599 s: as if the daemon restarted then
        again = service(reopened, fleet, clocks)
        assert again.curtail(clocks.wall()) is not None
        assert [r.device_id for r in again.overrides(clocks.wall())] == ["b"]
        clocks.mono += 2.0
        assert again.curtail(clocks.wall()) is None


def test_small_wall_clock_drift_is_not_a_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clocks = Clocks()
    with ControlStore.open(tmp_path / "w.sqlite") as store:
        control = service(store, [device("a", "S21")], clocks)
        control.set_curtail(None, 600.0, ACTOR)
        with caplog.at_level(logging.WARNING, logger="scheduler.control.service"):
            for _ in range(20):  # NTP slewing: 0.5 s in total, a little at each tick
                clocks.mono += 5.0
                clocks.step += timedelta(seconds=0.025)
                assert control.curtail(clocks.wall()) is not None
        assert "wall clock stepped" not in caplog.text


def test_active_overrides_are_capped_with_a_clear_error(tmp_path: Path) -> None:
    fleet = [device(f"m{n}", "S21") for n in range(5)]
    clocks = Clocks()
    with ControlStore.open(tmp_path / "w.sqlite") as store:
        control = service(store, fleet, clocks, max_overrides=3)
        for n in range(3):
            control.put_override(f"m{n}", "sleep", 600.0, "", ACTOR)
        with pytest.raises(ControlRejected) as refused:
            control.put_override("m3", "sleep", 600.0, "", ACTOR)
        assert refused.value.status_code == 409
        assert "3 overrides are active, the limit (3)" in refused.value.message
        control.put_override("m1", "sleep", 1200.0, "longer", ACTOR)  # replacing one is fine
        control.delete_override("m0", ACTOR)
        control.put_override("m3", "sleep", 600.0, "", ACTOR)  # room again
        clocks.mono += 601.0  # m2 and m3 expire: room for two more
        control.put_override("m4", "sleep", 600.0, "", ACTOR)
        control.put_override("m0", "sleep", 600.0, "", ACTOR)
        assert sorted(r.device_id for r in control.overrides()) == ["m0", "m1", "m4"]


async def test_the_api_answers_409_past_the_override_cap(tmp_path: Path) -> None:
    view = make_view(tmp_path)
    assert view.control is not None
    view.control.max_overrides = 2
    tokens = Tokens()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(view, tokens)),
        base_url="http://wattmux.test",
        headers=tokens.header(Role.OPERATOR),
    ) as client:
        body = {"workload": "sleep", "duration_seconds": 600}
        for name in sorted(view.state.devices)[:2]:
            assert (await client.put(f"/v1/overrides/{name}", json=body)).status_code == 200
        third = sorted(view.state.devices)[2]
        refused = await client.put(f"/v1/overrides/{third}", json=body)
        assert refused.status_code == 409
        assert "overrides are active, the limit (2)" in refused.json()["detail"]
        assert len((await client.get("/v1/overrides")).json()) == 2
