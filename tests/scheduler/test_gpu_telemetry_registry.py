"""GPU telemetry sources through their registry: shorthand and tables, run-time entries, gauges."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Literal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

from drivers.errors import Fatal, Unavailable
from drivers.gpu.config import GpuTelemetryOptions
from drivers.gpu.dcgm import DcgmSourceOptions
from drivers.gpu.nvml import NvmlReader, NvmlSource, NvmlSourceOptions
from drivers.gpu.registry import (
    GPU_TELEMETRY,
    GpuSourceContext,
    GpuTelemetryPlugin,
    GpuValues,
)
from scheduler.config.loading import ConfigError, parse_config
from scheduler.core.state import FleetState
from scheduler.observability.gpu_telemetry import GpuTelemetry
from scheduler.observability.metrics import Metrics
from tests.drivers.gpu.test_gpu import FakeNvml
from tests.drivers.market.replay_server import ReplayServer, Reply

DCGM = (Path(__file__).resolve().parents[1] / "fixtures/gpu/dcgm/h100_x2.prom").read_bytes()
H100 = "gpu-node-07/GPU-8f2c1a0e-1d3b-4c2a-9f0e-5a7b3c9d2e10"


def values(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == name:
            return {tuple(s.labels.values()): s.value for s in family.samples}
    return {}


def site(gpu_telemetry: dict[str, object]) -> dict[str, object]:
    return {
        "site": {"name": "g", "power_cap_kw": 100.0},
        "pools": [{"name": "main", "url": "stratum+tcp://p.invalid:3333", "user": "w"}],
        "devices": [{"id": "a1", "model": "S21", "address": "127.40.4.4", "pools": ["main"]}],
        "gpu_telemetry": gpu_telemetry,
    }


class RackOptions(BaseModel):
    """A source no central file knows about: a rack controller reporting its GPUs."""

    model_config = ConfigDict(extra="forbid")
    driver: Literal["rack-bmc"] = "rack-bmc"
    rack: str
    gpus: int = 2
    watts: float = 350.0


class RackSource:
    def __init__(self, options: RackOptions) -> None:
        self.options = options
        self.name = f"rack-bmc:{options.rack}"
        self.opened = self.closed = False
        self.down = False

    async def open(self) -> None:
        self.opened = True

    async def read(self) -> Mapping[str, GpuValues]:
        if self.down:
            raise Unavailable(self.name, "BMC did not answer")
        return {
            f"{self.options.rack}/{i}": {"power_w": self.options.watts, "temperature_c": 50.0 + i}
            for i in range(self.options.gpus)
        }

    async def close(self) -> None:
        self.closed = True


BUILT: list[RackSource] = []


def rack_sources(options: RackOptions, context: GpuSourceContext) -> Sequence[RackSource]:
    BUILT.append(RackSource(options))
    return [BUILT[-1]]


RACK = GpuTelemetryPlugin(
    tag="rack-bmc",
    options=RackOptions,
    factory=rack_sources,
    available_gauge=("wattmux_gpu_rack_bmc_available", "1 if a rack BMC was opened."),
)


@pytest.fixture
def rack() -> Iterator[GpuTelemetryPlugin]:
    BUILT.clear()
    GPU_TELEMETRY.register(RACK, "tests")
    yield RACK
    GPU_TELEMETRY.unregister("rack-bmc")


def test_every_builtin_source_declares_itself_in_its_own_module() -> None:
    assert set(GPU_TELEMETRY.tags()) >= {"nvml", "dcgm"}
    assert GPU_TELEMETRY.get("nvml").origin == "drivers.gpu.nvml"
    assert GPU_TELEMETRY.get("dcgm").origin == "drivers.gpu.dcgm"
    assert GPU_TELEMETRY.group == "wattmux.gpu_telemetry"


def test_the_shorthand_keys_are_entries_of_the_builtin_sources() -> None:
    parsed = parse_config(
        site(
            {
                "nvml": True,
                "dcgm_urls": ["http://a:9400/metrics", "http://b:9400/metrics"],
                "sources": [{"driver": "dcgm", "url": "http://c:9400/metrics"}],
            }
        ),
        environ={},
    )
    assert parsed.gpu_telemetry is not None
    expected: list[object] = [
        NvmlSourceOptions(),
        DcgmSourceOptions(url="http://a:9400/metrics"),
        DcgmSourceOptions(url="http://b:9400/metrics"),
        DcgmSourceOptions(url="http://c:9400/metrics"),
    ]
    assert parsed.gpu_telemetry.entries() == expected
    assert GpuTelemetryOptions().entries() == []


def test_a_source_table_is_validated_by_the_entry_it_names() -> None:
    with pytest.raises(
        ConfigError, match=r"gpu_telemetry\.sources\[0\]: unknown driver 'rack-bmc'"
    ):
        parse_config(site({"sources": [{"driver": "rack-bmc", "rack": "r1"}]}), environ={})
    with pytest.raises(ConfigError, match=r"gpu_telemetry\.sources\[0\]\.url: Field required"):
        parse_config(site({"sources": [{"driver": "dcgm"}]}), environ={})
    with pytest.raises(ConfigError, match=r"gpu_telemetry\.sources\[0\]: driver is missing"):
        parse_config(site({"sources": [{"url": "http://a:9400/metrics"}]}), environ={})


async def test_a_source_registered_at_run_time_validates_and_reaches_the_gauges(
    rack: GpuTelemetryPlugin,
) -> None:
    with pytest.raises(ConfigError, match=r"gpu_telemetry\.sources\[0\]\.watts: "):
        parse_config(
            site({"sources": [{"driver": "rack-bmc", "rack": "r", "watts": "x"}]}), environ={}
        )
    parsed = parse_config(
        site({"sources": [{"driver": "rack-bmc", "rack": "r7", "watts": 410.5}]}), environ={}
    )
    assert parsed.gpu_telemetry is not None
    [options] = parsed.gpu_telemetry.sources
    assert isinstance(options, RackOptions) and options.watts == 410.5
    metrics = Metrics(FleetState([]))
    async with (
        httpx.AsyncClient() as http,
        GpuTelemetry(parsed.gpu_telemetry, metrics, http) as gpus,
    ):
        [source] = BUILT
        assert source.opened
        assert values(metrics, "wattmux_gpu_rack_bmc_available") == {(): 1.0}
        assert values(metrics, "wattmux_gpu_nvml_available") == {(): 0.0}
        await gpus.read_once()
        power = values(metrics, "wattmux_gpu_power_watts")
        assert power == {("r7/0", "rack-bmc"): 410.5, ("r7/1", "rack-bmc"): 410.5}
        temperature = values(metrics, "wattmux_gpu_temperature_celsius")
        assert temperature[("r7/1", "rack-bmc")] == 51.0
        assert values(metrics, "wattmux_gpu_utilization_percent") == {}
        assert values(metrics, "wattmux_source_up")[("rack-bmc:r7",)] == 1.0
        source.down = True
        await gpus.read_once()
        assert values(metrics, "wattmux_source_up")[("rack-bmc:r7",)] == 0.0
        assert values(metrics, "wattmux_gpu_power_watts") == power  # the last readings stay
    assert source.closed


def test_an_entry_point_of_the_group_adds_a_source() -> None:
    point = EntryPoint("rack", f"{__name__}:RACK", "wattmux.gpu_telemetry")
    try:
        assert GPU_TELEMETRY.load_entry_point(point) == [RACK]
        assert GPU_TELEMETRY.get("rack-bmc").origin.startswith("entry point rack")
        parse_config(site({"sources": [{"driver": "rack-bmc", "rack": "r1"}]}), environ={})
    finally:
        GPU_TELEMETRY.unregister("rack-bmc")


@pytest.mark.system
async def test_a_dcgm_table_reads_like_dcgm_urls() -> None:
    async with ReplayServer("127.40.4.3") as server, httpx.AsyncClient() as http:
        server.set("/metrics", Reply(body=DCGM))
        url = server.url("/metrics")
        exported = []
        for section in ({"dcgm_urls": [url]}, {"sources": [{"driver": "dcgm", "url": url}]}):
            metrics = Metrics(FleetState([]))
            options = GpuTelemetryOptions.model_validate(section)
            async with GpuTelemetry(options, metrics, http) as gpus:
                await gpus.read_once()
                exported.append(
                    (
                        values(metrics, "wattmux_gpu_power_watts"),
                        values(metrics, "wattmux_source_up"),
                    )
                )
        assert exported[0] == exported[1]
        power, up = exported[0]
        assert power[(H100, "dcgm")] == 612.345 and up[(f"dcgm:{url}",)] == 1.0


async def test_nvml_through_its_entry_reads_every_gpu_and_closes() -> None:
    fake = FakeNvml()
    metrics = Metrics(FleetState([]))
    async with httpx.AsyncClient() as http:
        source = NvmlSource(NvmlReader(fake))
        options = GpuTelemetryOptions(nvml=True)
        async with GpuTelemetry(options, metrics, http, [("nvml", source)]) as gpus:
            await gpus.read_once()
            assert values(metrics, "wattmux_gpu_nvml_available") == {(): 1.0}
            assert values(metrics, "wattmux_gpu_power_watts") == {
                ("GPU-0", "nvml"): pytest.approx(612.345),
                ("GPU-1", "nvml"): pytest.approx(612.345),
            }
            assert values(metrics, "wattmux_gpu_utilization_percent")[("GPU-1", "nvml")] == 97
            assert values(metrics, "wattmux_source_up")[("nvml",)] == 1.0
    assert fake.shutdown == 1


async def test_a_source_that_cannot_open_is_said_once_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(NvmlReader):
        def open(self) -> None:
            raise Fatal("nvml", "NVML found no GPU: no GPU telemetry")

    metrics = Metrics(FleetState([]))
    async with httpx.AsyncClient() as http:
        source = NvmlSource(Broken())
        async with GpuTelemetry(GpuTelemetryOptions(), metrics, http, [("nvml", source)]) as gpus:
            await gpus.read_once()
            assert gpus.opened == []
            assert values(metrics, "wattmux_gpu_nvml_available") == {(): 0.0}
            assert ("nvml",) not in values(metrics, "wattmux_source_up")
    assert caplog.text.count("no GPU telemetry; the daemon goes on without it") == 1
