"""GET /v1/demand-response/preview and `wattmux dr-preview`: which machines go, in what order, before the event."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role
from scheduler.cli.client import EXIT_OK, EXIT_USAGE
from scheduler.cli.main import main
from scheduler.config.loading import parse_config
from scheduler.core.economics import market_economics, option_economics
from scheduler.core.model import Assignment, Event, Plan, Sample, Workload
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import NOW, ControlledView, Tokens, build_app, make_control
from tests.scheduler.helpers import market

TOKENS = Tokens()
MODELS = {"m1": "S21 Pro", "m2": "S19j Pro", "m3": "S21"}  # 15.0, 29.5, 17.5 J/TH
START = datetime(2026, 7, 1, 20, 0, tzinfo=UTC)


def mixed_view(tmp_path: Path) -> ControlledView:
    data: dict[str, Any] = {
        "site": {"name": "t", "power_cap_kw": 100.0},
        "store": {"path": str(tmp_path / "w.sqlite")},
        "api": {"listen": "127.63.2.1:9470"},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "devices": [
            {"id": d, "model": m, "address": f"127.63.2.{20 + i}", "pools": ["main"]}
            for i, (d, m) in enumerate(MODELS.items())
        ],
    }
    config = parse_config(data, "<test>", environ={})
    state = FleetState(config.all_devices(), power_cap_w=100_000.0)
    for device in state.devices.values():
        state.observe(
            Sample(device.id, NOW, Workload.mine("main"), device.nominal_power_w, 1e14, 60.0)
        )
    state.market = market(20.0)
    return ControlledView(
        state=state,
        metrics=Metrics(state, clock=lambda: NOW),
        config=config,
        control=make_control(ControlStore.open(config.store.path), state),
    )


@pytest.fixture
async def viewer(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ControlledView]]:
    view = mixed_view(tmp_path)
    transport = httpx.ASGITransport(app=build_app(view, TOKENS), client=("127.63.2.9", 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://wattmux.test", headers=TOKENS.header(Role.VIEWER)
    ) as client:
        yield client, view


PREVIEW = "/v1/demand-response/preview"


async def test_a_hypothetical_reduction_sheds_the_least_efficient_first(
    viewer: tuple[httpx.AsyncClient, ControlledView],
) -> None:
    client, view = viewer
    response = await client.get(
        PREVIEW, params={"reduction_kw": 5.0, "start": START.isoformat(), "priority": 3}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    nominal_kw = (3510.0 + 3068.0 + 3500.0) / 1000
    assert body["limit_kw"] == pytest.approx(nominal_kw - 5.0)
    assert body["site_kw_before"] == pytest.approx(nominal_kw)
    assert [m["device"] for m in body["machines"]] == ["m2", "m3"]  # 29.5 J/TH, then 17.5
    assert [m["order"] for m in body["machines"]] == [1, 2]
    assert body["shed_kw"] == pytest.approx((3068 - 20 + 3500 - 15) / 1000)
    assert body["site_kw_after"] == pytest.approx(3.510 + 0.020 + 0.015)
    assert body["feasible"] is True
    assert (body["event_id"], body["priority"]) == ("preview", 3)
    assert datetime.fromisoformat(body["start"]) == START
    economics = market_economics(view.state.snapshot(NOW))
    assert economics is not None
    expected = 0.0
    for machine in body["machines"]:
        device = view.state.devices[machine["device"]]
        mining = option_economics(device, Workload.mine("main"), economics).margin_usd_per_hour
        asleep = option_economics(device, Workload.sleep(), economics).margin_usd_per_hour
        assert machine["margin_lost_usd_per_hour"] == pytest.approx(mining - asleep)
        assert machine["workload_before"] == "mine(main)"
        expected += mining - asleep
    assert body["margin_lost_usd_per_hour"] == pytest.approx(expected)
    assert expected > 0  # at 20 USD/MWh mining pays: shedding loses money


async def test_a_cap_below_sleep_power_is_reported_infeasible(
    viewer: tuple[httpx.AsyncClient, ControlledView],
) -> None:
    client, _ = viewer
    body = (await client.get(PREVIEW, params={"target_kw": 0.0})).json()
    assert [m["device"] for m in body["machines"]] == ["m2", "m3", "m1"]
    assert body["feasible"] is False


async def test_a_known_event_is_previewed_at_its_start_and_an_unknown_one_is_404(
    viewer: tuple[httpx.AsyncClient, ControlledView],
) -> None:
    client, view = viewer
    event = Event("ercot-eea", START, START + timedelta(hours=2), target_kw=7.5, priority=2)
    view.state.set_events([event])
    body = (await client.get(PREVIEW, params={"event": "ercot-eea"})).json()
    assert (body["event_id"], body["limit_kw"], body["priority"]) == ("ercot-eea", 7.5, 2)
    assert [m["device"] for m in body["machines"]] == ["m2"]
    missing = await client.get(PREVIEW, params={"event": "nope"})
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"event": "ercot-eea", "target_kw": 5.0},
        {"event": "ercot-eea", "start": START.isoformat()},
        {"target_kw": -1.0},
        {"reduction_kw": "nan"},
        {"reduction_kw": 1e9},
        {"target_kw": 5.0, "start": "2026-07-01T20:00:00"},  # no offset
        {"target_kw": 5.0, "priority": -1},
        {"event": "x" * 200},
    ],
)
async def test_bad_queries_are_422_and_change_nothing(
    viewer: tuple[httpx.AsyncClient, ControlledView], params: dict[str, Any]
) -> None:
    client, view = viewer
    view.state.set_events([Event("ercot-eea", START, START + timedelta(hours=1), 7.0)])
    before = dataclasses.replace(view.state.snapshot(NOW), wall=START)
    response = await client.get(PREVIEW, params=params)
    assert response.status_code == 422, response.text
    after = dataclasses.replace(view.state.snapshot(NOW), wall=START)
    assert (after.events, dict(after.current)) == (before.events, dict(before.current))


@pytest.mark.system
async def test_the_cli_prints_the_preview_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = mixed_view(tmp_path)
    async with serve(build_app(view, TOKENS), "127.63.2.2", 0) as server:
        url = f"http://127.63.2.2:{bound_port(server)}"
        argv = ["dr-preview", "--url", url, "--token", TOKENS.by_role[Role.VIEWER]]
        code = await asyncio.to_thread(main, [*argv, "--reduce-kw", "5"])
        out, _ = capsys.readouterr()
        assert code == EXIT_OK
        lines = out.splitlines()
        assert "2 machines shed 6.5 kW" in lines[0]
        assert lines[1].split()[:4] == ["ORDER", "DEVICE", "MODEL", "J/TH"]
        assert lines[2].split()[:2] == ["1", "m2"] and lines[3].split()[:2] == ["2", "m3"]
        code = await asyncio.to_thread(main, argv)
        assert code == EXIT_USAGE
        assert "give --event ID" in capsys.readouterr().err


async def test_before_is_the_current_plan_with_its_overrides_and_curtail(
    viewer: tuple[httpx.AsyncClient, ControlledView],
) -> None:
    client, view = viewer
    # the daemon's guarded plan: m2 pinned asleep by an override, m1 held by min dwell
    view.plan = Plan(
        NOW,
        (
            Assignment("m1", Workload.mine("main"), "min_dwell", 1.0),
            Assignment("m2", Workload.sleep(), "override", 0.0),
            Assignment("m3", Workload.mine("main"), "profitable", 1.0),
        ),
    )
    body = (await client.get(PREVIEW, params={"reduction_kw": 5.0})).json()
    assert body["site_kw_before"] == pytest.approx((3510 + 20 + 3500) / 1000)
    assert [m["device"] for m in body["machines"]] == ["m3"]  # m2 is asleep already
    assert body["machines"][0]["workload_before"] == "mine(main)"
    assert body["site_kw_after"] == pytest.approx((3510 + 20 + 15) / 1000)
