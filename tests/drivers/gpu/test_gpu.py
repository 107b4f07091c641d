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
