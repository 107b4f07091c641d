"""GET /v1/devices/{id} and the health in /v1/devices: boards, fans, chips missing, codes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from scheduler.api.auth import Role
from scheduler.core.model import TERA, BoardHealth, Health, Sample, Workload
from tests.scheduler.api_fixtures import build_app
from tests.scheduler.test_api import NOW, TOKENS, FakeView, make_view

HEALTH = Health.of(
    [
        BoardHealth(hashrate_hs=78.1 * TERA, chips=65, board_temp_c=50.0, chip_temp_c=65.0),
        BoardHealth(hashrate_hs=77.9 * TERA, chips=65, board_temp_c=49.0, chip_temp_c=64.0),
        BoardHealth(hashrate_hs=60.2 * TERA, chips=51, board_temp_c=52.0, chip_temp_c=71.5),
    ],
    [5850, 5850, 5940, 0],
    reject_ratio=0.0073,
    uptime_s=4423,
    firmware="VNish 1.2.7",
    errors=["board 3: 14 chips lost"],
)


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, FakeView]]:
    view = make_view()
    view.state.observe(
        Sample("m1", NOW - 3.0, Workload.mine("main"), 3502.0, 216.2 * TERA, 68.5, health=HEALTH)
    )
    transport = httpx.ASGITransport(app=build_app(view, TOKENS))
    async with httpx.AsyncClient(transport=transport, base_url="http://wattmux.test") as http:
        yield http, view


async def test_one_device_with_all_its_health(
    client: tuple[httpx.AsyncClient, FakeView],
) -> None:
    http, _view = client
    reply = await http.get("/v1/devices/m1", headers=TOKENS.header(Role.VIEWER))
    assert reply.status_code == 200
    body = reply.json()
    assert body["id"] == "m1" and body["model_catalogued"] is True
    health = body["health"]
    assert [b["chips"] for b in health["board_list"]] == [65, 65, 51]
    assert [b["chip_temp_c"] for b in health["board_list"]] == [65.0, 64.0, 71.5]
    assert health["board_list"][0]["hashrate_ths"] == pytest.approx(78.1, rel=1e-6)
    assert health["fans_rpm"] == [5850, 5850, 5940, 0]
    assert health["fan_rpm_min"] == 0
    assert health["chip_temp_max_c"] == 71.5 and health["board_temp_max_c"] == 52.0
    assert (health["chips_found"], health["chips_expected"], health["chips_missing"]) == (
        181,
        195,  # S21 Pro: 3 boards x 65 chips (catalog)
        14,
    )
    assert health["share_reject_ratio"] == 0.0073 and health["uptime_seconds"] == 4423
    assert health["firmware"] == "VNish 1.2.7"
    assert health["error_codes"] == ["board 3: 14 chips lost"] and health["errors"] == 1


async def test_the_list_has_health_at_a_glance_without_boards(
    client: tuple[httpx.AsyncClient, FakeView],
) -> None:
    http, _view = client
    devices = (await http.get("/v1/devices", headers=TOKENS.header(Role.VIEWER))).json()
    by_id = {d["id"]: d for d in devices}
    assert by_id["m1"]["health"]["chips_missing"] == 14
    assert "board_list" not in by_id["m1"]["health"]
    assert by_id["m2"]["health"] is None  # unreachable: no current health
    assert by_id["m3"]["health"] is None  # never polled


async def test_unknown_device_is_404_and_a_token_is_needed(
    client: tuple[httpx.AsyncClient, FakeView],
) -> None:
    http, _view = client
    missing = await http.get("/v1/devices/nope", headers=TOKENS.header(Role.VIEWER))
    assert missing.status_code == 404 and "no device 'nope'" in missing.text
    assert (await http.get("/v1/devices/m1")).status_code == 401
