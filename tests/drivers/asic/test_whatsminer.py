"""Whatsminer API v2 over real TCP: tokens, encrypted writes, slow power changes, refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from drivers.asic.config import WhatsminerOptions
from drivers.asic.whatsminer import WhatsminerDriver, mining_off
from drivers.asic.whatsminer_crypto import v2_decrypt, v2_encrypt, v2_token
from drivers.asic.whatsminer_models import model_facts
from drivers.errors import Fatal, Rejected, Timeout
from drivers.sim.site import SimSite
from drivers.sim.tcp import Fault
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload
from tests.fakes import asic

FIXTURES = Path(__file__).parents[2] / "fixtures" / "whatsminer" / "m30s_v2.0.5"
POOLS = {
    "main": Pool("main", "stratum+tcp://main.example:3333", "site.w1"),
    "backup": Pool("backup", "stratum+tcp://backup.example:3333", "site.w1"),
}
PASSWORD = "s3cret"
OPTIONS = WhatsminerOptions(
    password=PASSWORD,
    timeout_seconds=0.5,
    confirm_timeout_seconds=3.0,
    confirm_interval_seconds=0.05,
)


def make_device(index: int, model: str = "M30S++") -> Device:
    return asic(
        f"wm-{index}",
        model,
        driver="whatsminer",
        address=f"127.38.0.{index + 1}",
        port=0,
        pools=("main", "backup"),
        sleep_power_w=10.0,
    )


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    async with SimSite([make_device(i) for i in range(2)], list(POOLS.values()), port=0) as sim:
        for miner in sim.miners.values():
            assert isinstance(miner, SimWhatsminer)
            miner.password = PASSWORD
            miner.power_off_delay_seconds = 0.3  # real firmware: seconds; shortened for tests
            miner.power_on_delay_seconds = 0.4
            miner.power_pct_delay_seconds = 0.2
        yield sim


def whatsminer(site: SimSite, device: Device) -> SimWhatsminer:
    miner = site.miners[device.id]
    assert isinstance(miner, SimWhatsminer)
    return miner


@pytest.mark.system
async def test_sleep_is_an_encrypted_power_off_confirmed_only_once_status_shows_it(
    site: SimSite,
) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS)
    outcome = await driver.apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.asleep and miner.command_counts["power_off"] == 1
    assert miner.command_counts["status"] >= 2  # the first read-back still showed it mining
    awake = await driver.apply(device, Workload.mine("main"))
    assert awake.status is OutcomeStatus.CONFIRMED, awake.detail
    assert not miner.asleep and miner.command_counts["power_on"] == 1
    assert miner.tokens_issued == 1  # one token for both writes


@pytest.mark.system
async def test_power_target_is_set_power_pct_and_reads_back_as_measured_power(
    site: SimSite,
) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS)
    outcome = await driver.apply(device, Workload.mine("main", 0.7))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert outcome.observed == Workload.mine("main", 0.7)
    assert miner.power_pct == 70
    assert miner.power_w() == pytest.approx(0.7 * 3472.0, rel=0.03)
    assert (await driver.collect(device)).workload == Workload.mine("main", 0.7)
    again = await driver.apply(device, Workload.mine("main", 0.7))
    assert again.status is OutcomeStatus.CONFIRMED
    assert miner.command_counts["set_power_pct"] == 1  # already there: no second write


@pytest.mark.system
async def test_levels_outside_the_model_range_are_refused_before_any_traffic(
    site: SimSite,
) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS)
    for level in (1.2, 0.3):
        outcome = await driver.apply(device, Workload.mine("main", level))
        assert outcome.status is OutcomeStatus.REJECTED and "0.5..1.0" in (outcome.detail or "")
    assert sum(miner.command_counts.values()) == 0
    assert model_facts("M30S++").family == "M30S" and model_facts("M60S").min_power_level == 0.4


@pytest.mark.system
async def test_pool_move_is_update_pools_with_the_pool_first(site: SimSite) -> None:
    device = site.devices[1]
    miner = whatsminer(site, device)
    outcome = await WhatsminerDriver(POOLS, OPTIONS).apply(device, Workload.mine("backup"))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert miner.state().active_pool_url == POOLS["backup"].url
    assert miner.command_counts["update_pools"] == 1


@pytest.mark.system
async def test_wrong_password_is_refused_by_the_miner_and_reported_rejected(
    site: SimSite,
) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS.model_copy(update={"password": SecretStr("wrong")}))
    outcome = await driver.apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.REJECTED and "decrypt" in (outcome.detail or "")
    with pytest.raises(Fatal):
        await driver.sleep(device)
    assert not miner.asleep and miner.command_counts["power_off"] == 0


@pytest.mark.system
async def test_writes_disabled_on_the_miner_are_rejected(site: SimSite) -> None:
    device = site.devices[0]
    whatsminer(site, device).write_enabled = False
    with pytest.raises(Rejected, match="permission denied"):
        await WhatsminerDriver(POOLS, OPTIONS).sleep(device)


@pytest.mark.system
async def test_an_expired_token_is_replaced_once_and_the_write_goes_through(
    site: SimSite,
) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS)  # reuses a token for 1500 s
    miner.token_lifetime_seconds = 0.2  # the miner forgets it much sooner
    await driver.privileged(device, "set_power_pct", percent="90")
    await asyncio.sleep(0.25)
    await driver.privileged(device, "set_power_pct", percent="80")  # 135, new token, retry
    assert miner.tokens_issued == 2 and miner.command_counts["set_power_pct"] == 2
    miner.token_lifetime_seconds = 0.0  # now every sign is stale at once
    with pytest.raises(Fatal, match="token refused twice"):
        await driver.privileged(device, "set_power_pct", percent="70")
    assert miner.tokens_issued == 3 and miner.command_counts["set_power_pct"] == 2


@pytest.mark.system
async def test_the_token_limit_code_136_fetches_a_new_token(site: SimSite) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS)
    await driver.privileged(device, "power_on")
    miner._signs.clear()  # the miner restarted: the held token is unknown to it
    await driver.privileged(device, "power_on")
    assert miner.tokens_issued == 2 and miner.command_counts["power_on"] == 2


@pytest.mark.system
async def test_a_hung_miner_times_out_and_a_hung_write_is_unavailable(site: SimSite) -> None:
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS.model_copy(update={"confirm_timeout_seconds": 0.3}))
    miner.fault, miner.fault_commands = Fault.HANG, frozenset({"power_off"})
    outcome = await driver.apply(device, Workload.sleep())
    assert outcome.status is OutcomeStatus.UNCONFIRMED  # no answer; read-backs show it mining
    assert "no complete reply" in (outcome.detail or "")
    miner.fault_commands = None
    with pytest.raises(Timeout):
        await driver.collect(device)


@pytest.mark.system
async def test_encrypted_replies_do_not_carry_the_plaintext(site: SimSite) -> None:
    """A write's reply on the wire is {"enc": ...} and decrypts with the token's key only."""
    device = site.devices[0]
    miner = whatsminer(site, device)
    driver = WhatsminerDriver(POOLS, OPTIONS)
    token = await driver._token(device, fresh=True)
    request = {"cmd": "set_power_pct", "token": token.sign, "percent": "85"}
    envelope = {"enc": 1, "data": v2_encrypt(token.aes_key, json.dumps(request))}
    reply = await driver._client.send(
        device.address, device.port, json.dumps(envelope).encode(), source=device.id
    )
    assert set(reply) == {"enc"}
    assert json.loads(v2_decrypt(token.aes_key, reply["enc"]))["Code"] == 131
    assert miner.power_pct == 100  # lands power_pct_delay_seconds later
    await asyncio.sleep(0.25)
    miner.settle()
    assert miner.power_pct == 85


async def replay(files: dict[str, str]) -> tuple[asyncio.Server, dict[str, int]]:
    """A TCP server answering each plain command with a recorded reply (no NUL, then close)."""
    seen: dict[str, int] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = json.loads(await reader.read(4096))
        command = request.get("cmd", request.get("command"))
        seen[command] = seen.get(command, 0) + 1
        writer.write((FIXTURES / files[command]).read_bytes())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.38.1.1", 0), seen


@pytest.mark.system
async def test_recorded_replies_read_as_a_sample_with_quoted_firmware_quirks() -> None:
    server, seen = await replay(
        {
            "summary+pools": "summary_pools.json",
            # the recording has no devs section: boards are left out, the rest reads the same
            "summary+pools+devs": "summary_pools.json",
            "status": "status.json",
            "get_token": "get_token.json",
        }
    )
    async with server:
        port = int(server.sockets[0].getsockname()[1])
        device = Device(
            "fx", DeviceKind.ASIC, "M30S", "whatsminer", "127.38.1.1", port, 86e12, 3472.0
        )
        driver = WhatsminerDriver(POOLS, WhatsminerOptions(password="admin"))
        sample = await driver.collect(device)
        assert sample.workload == Workload.mine("main")  # 0.96 of nominal: within tolerance
        assert sample.power_w == 3338 and sample.temperature_c == pytest.approx(84.19)
        assert sample.hashrate_hs == pytest.approx(86476281.16e6)
        token = await driver._token(device, fresh=True)
        assert token == v2_token("admin", "9986", "BQ5hoXV9", "ZAVm8Mm5")
        assert seen == {"summary+pools+devs": 1, "status": 1, "get_token": 1}


def test_newer_firmware_says_mineroff() -> None:
    assert mining_off("x", json.loads((FIXTURES / "status_newer.json").read_text())) is True
    assert mining_off("x", json.loads((FIXTURES / "status.json").read_text())) is False
