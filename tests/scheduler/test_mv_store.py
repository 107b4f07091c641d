"""M&V history in the store: the same M&V after a restart, a days-of-history baseline from disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.meter.base import MeterReading
from scheduler.api.app import create_app
from scheduler.api.auth import RateLimiter, Role
from scheduler.api.grid import grid_routes
from scheduler.api.wiring import ApiSecurity
from scheduler.config.grid import MeterConfig, SetpointConfig
from scheduler.control.grid import GridControl, Signal
from scheduler.control.mvstore import MeterRecorder
from scheduler.core.model import Event
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.meterlog import read_meter_minutes
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import ControlledView, Tokens, make_control, small_config

T0 = datetime(2026, 7, 4, 18, 0, tzinfo=UTC)  # the event starts
TOKENS = Tokens()
EVENT = "operator:ev-1"


class Clocks:
    def __init__(self, wall: datetime) -> None:
        self.wall = wall
        self.mono = 1000.0

    def step(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def site_kw(at: datetime) -> float:
    """1,000 kW; the event's hour on the two days before: 900 and 1,100; 1,200 just before it."""
    since = at - T0
    for day, kw in ((1, 900.0), (2, 1100.0)):
        if timedelta(days=-day) <= since < timedelta(days=-day, minutes=20):
            return kw
    if timedelta(minutes=-30) <= since < timedelta(0):
        return 1200.0
    if timedelta(0) <= since < timedelta(minutes=2):
        return 800.0
    if timedelta(minutes=2) <= since < timedelta(minutes=20):
        return 590.0
    return 1000.0


class Site:
    """One daemon's grid control, store, recorder and API over a SQLite file."""

    def __init__(self, tmp_path: Path, clocks: Clocks) -> None:
        config = small_config(tmp_path)
        state = FleetState(config.all_devices())
        self.store = ControlStore.open(tmp_path / "w.sqlite")
        view = ControlledView(state, Metrics(state), config, make_control(self.store, state))
        self.grid = GridControl(
            MeterConfig(source="mqtt"),
            SetpointConfig(mv_baseline_days=2),
            state,
            clock=lambda: clocks.mono,
            wall_clock=lambda: clocks.wall,
        )
        self.recorder = MeterRecorder(
            self.store, self.grid, flush_seconds=3600.0, clock=lambda: clocks.mono
        )
        security = ApiSecurity(TOKENS.authenticator(), RateLimiter(per_minute=600, burst=100), 4096)
        extension = grid_routes(self.grid, view, None, wall_clock=lambda: clocks.wall)
        self.app = create_app(view, security, [extension])

    async def mv(self, baseline: str, event: str = EVENT) -> dict[str, Any]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://wattmux.test",
            headers=TOKENS.header(Role.VIEWER),
        ) as client:
            reply = await client.get(f"/v1/events/{event}/mv", params={"baseline": baseline})
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()
        return data


async def test_mv_is_the_same_after_a_restart_and_days_of_history_come_from_the_store(
    tmp_path: Path,
) -> None:
    clocks = Clocks(T0 - timedelta(days=2, minutes=5))
    site = Site(tmp_path, clocks)
    assert site.grid.meter is not None
    # a DR event over the same window (MQTT): shed 400 kW off the baseline
    site.grid.state.set_events([Event("eea-9", T0, T0 + timedelta(minutes=20), reduction_kw=400.0)])
    end = T0 + timedelta(minutes=25)
    while clocks.wall < end:  # a reading every 10 s, the daemon's tick after each
        if clocks.wall == T0:
            site.grid.accept(Signal("ev-1", "operator", "setpoint", kw=600.0))
        if clocks.wall == T0 + timedelta(minutes=20):
            site.grid.accept(Signal("end-1", "operator", "release"))
        site.grid.meter.push(MeterReading(site_kw(clocks.wall) * 1000.0, clocks.mono))
        site.recorder()
        clocks.step(10.0)
    before = {method: await site.mv(method) for method in ("pre_event", "days_of_history")}
    assert before["pre_event"]["baseline_kw"] == pytest.approx(1200.0)
    assert before["days_of_history"]["baseline_kw"] == pytest.approx(1000.0)
    assert before["pre_event"]["response_seconds"] == 120.0
    assert [i["metered_kw"] for i in before["pre_event"]["intervals"]] == pytest.approx(
        [(2 * 800 + 3 * 590) / 5, 590.0, 590.0, 590.0]
    )
    site.grid.accept(Signal("ev-2", "operator", "setpoint", kw=700.0))  # in force at the stop
    dr_before = await site.mv("days_of_history", "eea-9")
    assert dr_before["target_kw"] == pytest.approx(600.0) and dr_before["source"] == "dr"
    stopped_at = clocks.wall
    site.recorder.flush(stopping=True)  # the daemon's stop
    site.store.close()

    clocks.step(30.0)  # a restart: a new daemon over the same file, nothing in memory
    again = Site(tmp_path, clocks)
    assert not again.grid.history.samples and again.grid.find(EVENT) is None
    stored = read_meter_minutes(again.store, T0 - timedelta(days=3), end)
    assert len(stored) == 2 * 24 * 60 + 30  # one row per minute of the two days and 30 minutes
    after = {method: await again.mv(method) for method in ("pre_event", "days_of_history")}
    assert after == before
    assert (await again.mv("pre_event", "operator:ev-2"))["end"] == stopped_at.isoformat()
    assert not again.grid.state.events  # DR events are not kept in memory over a restart
    assert await again.mv("days_of_history", "eea-9") == dr_before
    again.store.close()


async def test_old_minutes_are_deleted_after_the_retention(tmp_path: Path) -> None:
    clocks = Clocks(T0)
    site = Site(tmp_path, clocks)
    site.recorder.retention_days = 1.0
    site.recorder.add(T0 - timedelta(days=3), 5000.0)
    site.recorder.add(T0 - timedelta(hours=2), 7000.0)
    site.recorder.add(T0 - timedelta(hours=2, seconds=-30), 9000.0)  # the same minute
    site.recorder.flush()
    rows = read_meter_minutes(site.store, T0 - timedelta(days=5), T0)
    assert rows == [(T0 - timedelta(hours=2), 8000.0)]
    site.store.close()
