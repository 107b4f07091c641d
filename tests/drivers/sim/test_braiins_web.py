"""The simulated Braiins OS web interface: GraphQL login, session, and the miner's own state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from drivers.sim import boser
from drivers.sim.braiins_grpc import SimBraiinsGrpc
from drivers.sim.braiins_web import MAX_BODY_BYTES
from drivers.sim.miner import BOARDS, SimMiner
from scheduler.core.model import Device, DeviceKind, Pool

pytest.importorskip("graphql", reason="graphql-core (dev extra) is not installed")

pytestmark = pytest.mark.system

POOL = Pool("main", "stratum+tcp://main.example:3333", "site.w1")
LOGIN = """mutation ($username: String!, $password: String!) {
  auth { login(username: $username, password: $password) { ... on VoidResult { void } } }
}"""
DATA = """{
  bosminer { info {
    workSolver { realHashrate { mhs5S } childSolvers { name hwDetails { chips }
      temperatures { name degreesC } } }
    fans { name rpm speed }
    summary { power { limitW approxConsumptionW } }
    poolGroups { name pools { url user status active } }
  } }
}"""


@pytest.fixture
async def bos() -> AsyncIterator[tuple[SimBraiinsGrpc, httpx.AsyncClient]]:
    device = Device(
        "bos-web", DeviceKind.ASIC, "S19j Pro", "braiins", "127.39.3.1", 0, 104e12, 3068.0,
        sleep_power_w=20.0,
    )  # fmt: skip
    miner = SimMiner(device, [POOL], ramp_seconds=0, thermal_tau_seconds=0)
    boser.play_boser(miner)
    api = SimBraiinsGrpc(miner, web_port=0)
    await miner.start()
    await api.start()
    assert api.web is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://{miner.address}:{api.web.port}") as client:
            yield api, client
    finally:
        await api.stop()
        await miner.stop()


async def _post(client: httpx.AsyncClient, query: str, **variables: str) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200
    reply: dict[str, Any] = response.json()
    return reply


async def test_data_needs_a_login_and_a_wrong_password_opens_no_session(
    bos: tuple[SimBraiinsGrpc, httpx.AsyncClient],
) -> None:
    _, client = bos
    reply = await _post(client, DATA)
    assert {"message": "Unauthorized"} in reply["errors"]
    assert reply["data"]["bosminer"]["info"]["workSolver"] is None
    # identity stays readable without a session (how clients tell the firmware)
    identity = await _post(
        client, "{ bosminer { info { modelName } } bos { info { version { full } } } }"
    )
    assert identity == {
        "data": {
            "bosminer": {"info": {"modelName": "Antminer S19j Pro"}},
            "bos": {"info": {"version": {"full": boser.BOS_VERSION}}},
        }
    }
    wrong = await client.post(
        "/graphql", json={"query": LOGIN, "variables": {"username": "root", "password": "x"}}
    )
    assert "set-cookie" not in wrong.headers
    assert wrong.json() == {"data": {"auth": {"login": {}}}}
    assert "errors" in await _post(client, DATA)


async def test_after_login_the_reads_are_the_simulated_miners_state(
    bos: tuple[SimBraiinsGrpc, httpx.AsyncClient],
) -> None:
    api, client = bos
    login = await _post(client, LOGIN, username="root", password="root")
    assert login == {"data": {"auth": {"login": {"void": True}}}}
    assert client.cookies.get("session_id")
    api.target_w = 2900  # what SetPowerTarget leaves (the power follows it)
    api.miner.set_power_level(2900 / 3068.0)
    info = (await _post(client, DATA))["data"]["bosminer"]["info"]
    now = api.miner.physics.now(None)
    assert info["workSolver"]["realHashrate"]["mhs5S"] == pytest.approx(
        api.miner.hashrate_hs(now) / 1e6, rel=0.02
    )
    assert info["summary"]["power"]["limitW"] == 2900
    assert info["summary"]["power"]["approxConsumptionW"] == pytest.approx(
        api.miner.power_w(now), rel=0.02
    )
    boards = info["workSolver"]["childSolvers"]
    assert [board["name"] for board in boards] == [str(n + 1) for n in range(BOARDS)]
    assert {board["hwDetails"]["chips"] for board in boards} == {126}
    rows = boser.board_rows(api.miner, now)
    for board, (_, chip, pcb) in zip(boards, rows, strict=True):
        temperatures = {t["name"]: t["degreesC"] for t in board["temperatures"]}
        assert temperatures["MAX_CHIP"] == pytest.approx(chip, abs=1)
        assert temperatures["MAX_BOARD"] == temperatures["OUTLET"] == pytest.approx(pcb, abs=1)
        assert temperatures["INLET"] < temperatures["OUTLET"]
    assert [fan["rpm"] for fan in info["fans"]] == pytest.approx(
        boser.fan_rpms(api.miner, now), abs=100
    )
    assert info["poolGroups"] == [
        {
            "name": "default",
            "pools": [
                {"url": POOL.url, "user": POOL.user, "status": "ALIVE", "active": True},
            ],
        }
    ]


async def test_unknown_fields_and_oversized_bodies_are_refused(
    bos: tuple[SimBraiinsGrpc, httpx.AsyncClient],
) -> None:
    _, client = bos
    reply = await _post(client, "{ bosminer { info { nonsense } } }")
    assert "data" not in reply
    assert "nonsense" in reply["errors"][0]["message"]
    with pytest.raises(httpx.HTTPError):
        await client.post("/graphql", content=b" " * (MAX_BODY_BYTES + 1))
