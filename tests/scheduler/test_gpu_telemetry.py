"""GPU telemetry in the daemon: no NVML here (said once, the daemon goes on); dcgm over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drivers.gpu.config import GpuTelemetryOptions
from scheduler.config.loading import parse_config
from scheduler.core.state import FleetState
from scheduler.daemon import Daemon
from scheduler.observability.gpu_telemetry import GpuTelemetry
from scheduler.observability.metrics import Metrics
from tests.conftest import free_port
from tests.drivers.market.replay_server import ReplayServer, Reply

DCGM = (Path(__file__).resolve().parents[1] / "fixtures/gpu/dcgm/h100_x2.prom").read_bytes()


def values(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name == name:
            return {tuple(s.labels.values()): s.value for s in family.samples}
    return {}


@pytest.mark.system
async def test_no_nvml_is_said_and_dcgm_is_exported(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(FleetState([]))
    async with ReplayServer("127.40.4.1") as server, httpx.AsyncClient() as http:
        server.set("/metrics", Reply(body=DCGM))
        options = GpuTelemetryOptions(nvml=True, dcgm_urls=[server.url("/metrics")])
        with caplog.at_level(logging.WARNING):
            async with GpuTelemetry(options, metrics, http) as gpus:
                await gpus.read_once()
                assert values(metrics, "wattmux_gpu_nvml_available") == {(): 0.0}
                power = values(metrics, "wattmux_gpu_power_watts")
                assert (
                    power[("gpu-node-07/GPU-8f2c1a0e-1d3b-4c2a-9f0e-5a7b3c9d2e10", "dcgm")]
                    == 612.345
                )
                server.set("/metrics", Reply(503, b""))
                await gpus.read_once()
                up = values(metrics, "wattmux_source_up")
                assert up[(f"dcgm:{server.url('/metrics')}",)] == 0.0
    assert "no GPU telemetry; the daemon goes on without it" in caplog.text


async def test_daemon_runs_on_a_host_without_gpus(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(
        {
            "site": {"name": "g", "power_cap_kw": 100.0},
            "control": {"tick_seconds": 0.1},
            "store": {"path": str(tmp_path / "w.sqlite")},
            "api": {"listen": f"127.0.0.1:{free_port()}"},
            "pools": [{"name": "main", "url": "stratum+tcp://p.invalid:3333", "user": "w"}],
            "devices": [
                {
                    "id": "a1",
                    "model": "S21",
                    "address": "127.40.4.2",
                    "pools": ["main"],
                    "options": {"port": free_port("127.40.4.2"), "timeout_seconds": 0.1},
                }
            ],
            "gpu_telemetry": {"nvml": True},
        },
        environ={},
    )
    daemon = Daemon(config)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING):
        runner = asyncio.create_task(daemon.run(stop, serve_api=False))
        try:
            await asyncio.wait_for(daemon.ready.wait(), 10)
            assert daemon.loop is not None
            ticks = daemon.loop.ticks
            await asyncio.sleep(0.3)
            assert daemon.loop.ticks > ticks and not runner.done()
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10)
    assert "nvml: NVML unavailable" in caplog.text
