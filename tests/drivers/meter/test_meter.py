"""The site meter: each bundled register map read over Modbus TCP from pymodbus's own server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from drivers.errors import MalformedReply, Unavailable
from drivers.meter.http import HttpMeter, parse_reading
from drivers.meter.maps import MapError, bundled_maps, load_map
from drivers.meter.modbus import ModbusMeter
from drivers.sim.meter import SimMeter, site_draw
from scheduler.control.sitemeter import SiteMeter, disagreement_ratio


def test_bundled_maps_are_the_documented_ones() -> None:
    assert set(bundled_maps()) == {
        "sunspec-203",
        "sunspec-201",
        "eastron-sdm630",
        "carlo-gavazzi-em340",
    }


@pytest.mark.system
@pytest.mark.parametrize(
    "name", ["sunspec-203", "sunspec-201", "eastron-sdm630", "carlo-gavazzi-em340"]
)
async def test_each_map_reads_site_power_and_energy_from_a_real_modbus_server(name: str) -> None:
    register_map = load_map(name)
    draw = {"w": 123_456.0}
    async with SimMeter(
        register_map, lambda: draw["w"], energy_kwh=lambda: 4321.0, power_scale_factor=1
    ) as sim:
        meter = ModbusMeter("127.0.0.1", sim.port, register_map, timeout_seconds=1.0)
        try:
            first = await meter.read()
            draw["w"] = 98_760.0  # the meter follows the site on the next read
            second = await meter.read()
        finally:
            meter.close()
    assert first.power_w == pytest.approx(123_456.0, abs=10.0)
    assert second.power_w == pytest.approx(98_760.0, abs=10.0)
    assert first.energy_import_kwh == pytest.approx(4321.0, rel=1e-4)
    assert sim.reads >= 4


@pytest.mark.system
async def test_a_meter_that_is_not_sunspec_or_gone_is_an_error_never_a_reading() -> None:
    sdm = load_map("eastron-sdm630")
    async with SimMeter(sdm, lambda: 1000.0) as sim:
        # a SunSpec map against a meter without the SunS marker
        meter = ModbusMeter("127.0.0.1", sim.port, load_map("sunspec-203"), timeout_seconds=0.5)
        with pytest.raises(MalformedReply):
            await meter.read()
        meter.close()
        site = SiteMeter(ModbusMeter("127.0.0.1", sim.port, sdm, timeout_seconds=0.5))
        assert (await site.read_once()) is not None
        port = sim.port
    site.source = ModbusMeter("127.0.0.1", port, sdm, timeout_seconds=0.3)
    assert await site.read_once() is None  # the server is gone
    assert site.reads["ok"] == 1 and sum(site.reads.values()) == 2
    with pytest.raises(Unavailable):
        await site.source.read()


def test_site_meter_readings_age_out() -> None:
    now = {"t": 0.0}
    site = SiteMeter(HttpMeter("http://127.0.0.1:1/"), stale_seconds=5.0, clock=lambda: now["t"])
    site.latest = parse_reading("m", b'{"power_w": 5000}', 0.0)
    assert site.power_w() == 5000.0
    now["t"] = 6.0
    assert site.power_w() is None


@pytest.mark.parametrize(
    "body",
    [b"[]", b'{"power_w": "5"}', b'{"power_w": NaN}', b'{"power_w": 1e30}', b"{" * 100, b"x"],
)
def test_http_meter_bodies_that_are_not_a_reading(body: bytes) -> None:
    with pytest.raises(MalformedReply):
        parse_reading("m", body, 0.0)


async def test_http_meter_reads_json() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"power_w": 7500.5, "energy_import_kwh": 12.0})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    reading = await HttpMeter("http://meter.test/p", client=client).read()
    assert (reading.power_w, reading.energy_import_kwh) == (7500.5, 12.0)


def test_disagreement_ratio() -> None:
    assert disagreement_ratio(10_000.0, 9_000.0) == pytest.approx(0.1)
    assert disagreement_ratio(None, 9_000.0) is None


def test_a_broken_map_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps({"name": "m", "points": {"energy_import_kwh": {"type": "int16", "address": 1}}})
    )
    with pytest.raises(MapError, match="power_w is required"):
        load_map(str(path))
    with pytest.raises(MapError, match="unknown register map"):
        load_map("no-such-meter")


def test_site_draw_adds_base_load() -> None:
    draw = site_draw(lambda: 1000.0, base_load_w=500.0)
    assert draw() == 1500.0
