"""``wattmux discover`` over real TCP on a loopback /24: finds the miners, prints pasteable config."""

from __future__ import annotations

import io
import socket
import tomllib

import pytest

from drivers.asic.discover import hosts
from drivers.sim.site import SimSite
from scheduler.cli.discover import main_args, run_discover
from scheduler.config.loading import parse_config
from scheduler.core.model import Device, Pool
from tests.fakes import asic

POOL = Pool("main", "stratum+tcp://main.example:3333", "w")
ADDRESSES = ["127.36.0.1", "127.36.0.7", "127.36.0.20", "127.36.0.100", "127.36.0.254"]


def common_free_port() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((ADDRESSES[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for address in ADDRESSES[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every address")


def device(address: str, model: str) -> Device:
    return asic(
        f"d{address}",
        model,
        address=address,
        port=0,
        hashrate_hs=104e12,
        power_w=3068.0,
        sleep_power_w=15.0,
    )


@pytest.mark.system
async def test_discover_finds_every_miner_and_prints_entries_that_validate() -> None:
    port = common_free_port()
    models = ["S19j Pro", "S21", "S19j Pro", "Mystery 9000", "S21"]
    devices = [device(a, m) for a, m in zip(ADDRESSES, models, strict=True)]
    async with SimSite(devices, [POOL], port=port) as site:
        site.miners[devices[1].id].version_extra = {"LUXminer": "2024.1.26.143259"}
        out, err = io.StringIO(), io.StringIO()
        # 3 s: the simulated miners answer from this test's own event loop, slow on a loaded machine
        args = main_args(["127.36.0.0/24", "--port", str(port), "--timeout", "3"])
        status = await run_discover(args, out, err)
    assert status == 0
    assert "scanned 254/254 addresses, 5 miners" in err.getvalue()
    text = out.getvalue()
    entries = tomllib.loads(text)["devices"]
    assert [e["address"] for e in entries] == ADDRESSES
    assert [e["options"]["driver"] for e in entries] == [
        "cgminer",
        "luxos",
        "cgminer",
        "cgminer",
        "cgminer",
    ]
    # a model the catalog lacks: the figures the miner reports stand in (measured now)
    assert entries[3]["model"] == "Mystery 9000"
    assert entries[3]["nominal_hashrate_ths"] == pytest.approx(104.0, rel=0.05)
    assert entries[3]["nominal_power_w"] == pytest.approx(3068.0, rel=0.05)
    assert "# not in the model catalog: figures as measured" in text
    known = [e for e in entries if "model" in e]
    parsed = parse_config(
        {
            "site": {"name": "t", "power_cap_kw": 100.0},
            "pools": [{"name": "main", "url": POOL.url, "user": "w"}],
            "devices": known,
        },
        environ={},
    )
    assert [d.driver for d in parsed.all_devices()] == ["cgminer", "luxos"] + ["cgminer"] * 3
    assert {d.port for d in parsed.all_devices()} == {port}


async def test_nothing_found_and_bad_networks_are_reported() -> None:
    out, err = io.StringIO(), io.StringIO()
    args = main_args(["127.36.1.0/30", "--port", "9", "--timeout", "0.2"])
    assert await run_discover(args, out, err) == 1 and out.getvalue() == ""
    assert await run_discover(main_args(["10.0.0.0/8"]), out, err) == 2
    assert "at most a /16" in err.getvalue()
    assert await run_discover(main_args(["not-a-net"]), out, err) == 2
    assert hosts("127.36.2.9/32") == ["127.36.2.9"]
