"""POST /v1/device-actions and GET /v1/device-actions/{id} over HTTP, and ``wattmux maintain``,
against simulated miners (stock Antminer web, Whatsminer API v2, the cgminer API)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from drivers.sim.antminer_web import SimAntminerWeb
from drivers.sim.site import SimSite
from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role
from scheduler.cli.main import build_parser
from scheduler.cli.maintain import cmd_maintain
from scheduler.control.device_actions import MaintenanceRunner
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.store.operator import ControlStore
from scheduler.store.sqlite import MEMORY
from tests.scheduler.api_fixtures import (
    ControlledView,
    Tokens,
    build_app,
    make_control,
    small_config,
)
from tests.scheduler.test_device_actions import POOLS, driver_for, make_device

pytestmark = pytest.mark.system  # simulators and the API on loopback

TOKENS = Tokens()


@dataclass
class Api:
    http: httpx.AsyncClient
    view: ControlledView
    site: SimSite
    app: Any


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    devices = [make_device(0, "antminer", "S19 Pro"), make_device(1, "cgminer", "S19j Pro")]
    async with SimSite(devices, list(POOLS.values()), port=0) as site:
        state = FleetState(site.devices)
        view = ControlledView(
            state=state,
            metrics=Metrics(state),
            config=small_config(tmp_path),
            control=make_control(ControlStore.open(MEMORY), state),
        )
        drivers = {
            d.id: driver_for(d.driver, getattr(site.companions.get(d.id), "port", 0))
            for d in site.devices
        }
        view.device_actions = MaintenanceRunner(  # type: ignore[attr-defined]
            state.devices, drivers, POOLS, verify_interval_seconds=0.05
        )
        app = build_app(view, TOKENS)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wattmux.test") as http:
            yield Api(http, view, site, app)


async def finished(http: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    for _ in range(200):
        job = (
            await http.get(f"/v1/device-actions/{job_id}", headers=TOKENS.header(Role.VIEWER))
        ).json()
        if job["done"]:
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError("job did not end")


async def test_operator_starts_a_job_read_back_and_audited(api: Api) -> None:
    body = {"action": "locate", "devices": ["antminer", "cgminer"], "verify_timeout_seconds": 2}
    viewer = await api.http.post(
        "/v1/device-actions", json=body, headers=TOKENS.header(Role.VIEWER)
    )
    assert viewer.status_code == 403
    started = await api.http.post(
        "/v1/device-actions", json=body, headers=TOKENS.header(Role.OPERATOR)
    )
    assert started.status_code == 202, started.text
    job = await finished(api.http, started.json()["id"])
    outcomes = {o["device"]: (o["status"], o["detail"]) for o in job["outcomes"]}
    assert outcomes["antminer"] == ("confirmed", "locate LED on")
    assert outcomes["cgminer"][0] == "unsupported"
    assert job["counts"] == {"confirmed": 1, "unsupported": 1} and job["batches_done"] == 1
    web = api.site.companions["antminer"]
    assert isinstance(web, SimAntminerWeb) and web.blink
    audit = (await api.http.get("/v1/audit", headers=TOKENS.header(Role.VIEWER))).json()
    rows = [r for r in audit["items"] if r["path"] == "/v1/device-actions"]
    assert [r["status_code"] for r in rows] == [202, 403]  # newest first; the viewer's refusal
    row = rows[0]
    assert row["principal"] == "operator-1" and row["role"] == "operator"
    assert row["result"] == "locate: 1 confirmed, 1 unsupported"
    assert '"action": "locate"' in row["after"]


async def test_bad_requests_are_422_and_unknown_jobs_404(api: Api) -> None:
    headers = TOKENS.header(Role.OPERATOR)
    unknown = await api.http.post(
        "/v1/device-actions", json={"action": "reboot", "devices": ["nope"]}, headers=headers
    )
    assert unknown.status_code == 422 and "unknown device(s): 'nope'" in unknown.text
    no_pool = await api.http.post(
        "/v1/device-actions", json={"action": "pool", "devices": ["cgminer"]}, headers=headers
    )
    assert no_pool.status_code == 422 and "pool: give a configured pool name" in no_pool.text
    typo = await api.http.post(
        "/v1/device-actions", json={"action": "explode", "devices": ["cgminer"]}, headers=headers
    )
    assert typo.status_code == 422
    missing = await api.http.get("/v1/device-actions/99", headers=TOKENS.header(Role.VIEWER))
    assert missing.status_code == 404


async def test_no_runner_yet_is_503(api: Api) -> None:
    api.view.device_actions = None  # type: ignore[attr-defined]
    reply = await api.http.get("/v1/device-actions/1", headers=TOKENS.header(Role.VIEWER))
    assert reply.status_code == 503


async def test_cli_maintain_follows_the_job_and_prints_each_device(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(api.app, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{bound_port(server)}"
        args = build_parser().parse_args(
            [
                *("maintain", "reboot", "antminer", "cgminer", "--batch-size", "1"),
                *("--keep-going", "--verify-timeout", "3s", "--url", url),
                f"--token={TOKENS.by_role[Role.OPERATOR]}",
            ]
        )
        api.site.miners["antminer"].physics.started_at -= 600
        status = await asyncio.to_thread(cmd_maintain, args, lambda _s: time.sleep(0.05))
    out = capsys.readouterr().out
    assert status == 1  # the cgminer device cannot reboot
    lines = [line.split() for line in out.splitlines()]
    assert lines[1][:4] == ["antminer", "1", "confirmed", "uptime"]
    assert lines[2][:3] == ["cgminer", "2", "unsupported"]
    assert out.rstrip().endswith("reboot: 1 confirmed, 1 unsupported")
    assert api.site.miners["antminer"].reboots == 1
