"""GPU telemetry: NVML's no-GPU path on this machine, dcgm-exporter output over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from drivers.errors import Fatal, MalformedReply, Unavailable
from drivers.gpu.dcgm import DcgmScraper
from drivers.gpu.nvml import NvmlReader
from tests.drivers.market.replay_server import ReplayServer, Reply

DCGM = (Path(__file__).resolve().parents[2] / "fixtures/gpu/dcgm/h100_x2.prom").read_bytes()


def test_nvml_without_gpu_says_so_clearly() -> None:
    reader = NvmlReader()  # the real pynvml: this machine has no NVIDIA driver
    with pytest.raises(Fatal, match="no GPU telemetry"):
        reader.open()
    with pytest.raises(Unavailable):
        NvmlReader().read()


@pytest.mark.system
async def test_dcgm_scrape_of_recorded_output() -> None:
    async with ReplayServer("127.40.2.1") as server, httpx.AsyncClient() as client:
        server.set("/metrics", Reply(body=DCGM))
        gpus = await DcgmScraper(server.url("/metrics"), client).scrape()
        assert len(gpus) == 2
        first = gpus["gpu-node-07/GPU-8f2c1a0e-1d3b-4c2a-9f0e-5a7b3c9d2e10"]
        assert first["power_w"] == pytest.approx(612.345)
        assert first["temperature_c"] == 64 and first["memory_used_mib"] == 80195
        assert gpus["gpu-node-07/GPU-8f2c1a1e-1d3b-4c2a-9f0e-5a7b3c9d2e11"]["last_xid"] == 79
        server.set("/metrics", Reply(body=b"# nothing useful\nnode_load1 0.5\n"))
        with pytest.raises(MalformedReply):
            await DcgmScraper(server.url("/metrics"), client).scrape()
        server.set("/metrics", Reply(500, b"oops"))
        with pytest.raises(Unavailable):
            await DcgmScraper(server.url("/metrics"), client).scrape()


class FakeNvml:
    """Stands in for libnvidia-ml (there is no GPU here): the calls and shapes pynvml exposes."""

    NVML_TEMPERATURE_GPU = 0
    nvmlEventTypeXidCriticalError = 8

    class NVMLError(Exception):
        pass

    class NVMLError_Timeout(NVMLError):
        pass

    def __init__(self) -> None:
        self.events = [type("E", (), {"device": 1, "eventData": 79})()]
        self.shutdown = 0

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None:
        self.shutdown += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlEventSetCreate(self) -> str:
        return "set"

    def nvmlEventSetFree(self, events: str) -> None: ...
    def nvmlDeviceRegisterEvents(self, handle: int, kind: int, events: str) -> None: ...
    def nvmlEventSetWait_v2(self, events: str, timeout_ms: int) -> object:
        if not self.events:
            raise self.NVMLError_Timeout()
        return self.events.pop()

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> object:
        return type("M", (), {"used": 40 << 30, "total": 80 << 30})()

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 60 + handle

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 612_345  # mW

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return 700_000

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> object:
        return type("U", (), {"gpu": 97})()


def test_nvml_readings_and_xid_count() -> None:
    fake = FakeNvml()
    reader = NvmlReader(fake)
    reader.open()
    first, second = reader.read()
    assert first.power_w == pytest.approx(612.345) and first.power_limit_w == 700.0
    assert first.memory_used_bytes == 40 << 30 and first.utilization_percent == 97
    assert (first.xid_errors, second.xid_errors, second.last_xid) == (0, 1, 79)
    reader.close()
    reader.close()
    assert fake.shutdown == 1
