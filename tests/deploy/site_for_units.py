"""The simulated site the systemd tests and benchmark point the installed daemon at.

Good simulated miners (``python -m drivers.sim``) and hostile ones
(bench/hostile_server.py) run on the host, each in its own process, on
loopback addresses 127.77.<subnet>.x; the daemon inside the container reaches
them over the shared network.  ``asleep`` reads every good miner back from the
host through wattmux's own driver.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.asic.registry import create_asic_driver
from drivers.errors import DriverError
from scheduler.config.devices import pools_of
from scheduler.config.loading import parse_config
from scheduler.core.model import WorkloadKind

REPO = Path(__file__).resolve().parents[2]
POOL_URL = "stratum+tcp://main.pool.invalid:3333"
HOSTILE_KINDS = "never_close,garbage,drip,reset,deep,endless"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _start(argv: list[str], quiet: bool) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        argv,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line or "ready" not in json.loads(line):
        process.kill()
        raise RuntimeError(f"{argv[1:3]} did not start: {line!r}")
    return process


@dataclass
class UnitSite:
    """Good miners 127.77.S.1.., hostile ones 127.77.S.201.., the API on 127.77.S.254."""

    good: int
    hostile: int
    subnet: int = field(default_factory=lambda: random.randint(1, 250))
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.good > 200 or self.hostile > 50:
            raise ValueError("at most 200 good and 50 hostile miners")
        self.port = free_port(self.address(1))
        self.api_port = free_port(self.address(254))

    def address(self, host: int) -> str:
        return f"127.77.{self.subnet}.{host}"

    def start(self) -> None:
        python = sys.executable
        self.processes.append(
            _start(
                [python, "-m", "drivers.sim", "--first-address", self.address(1),
                 "--count", str(self.good), "--port", str(self.port), "--pool-url", POOL_URL],
                quiet=False,
            )
        )  # fmt: skip
        if self.hostile:
            self.processes.append(
                _start(
                    [python, "bench/hostile_server.py", "--first-address", self.address(201),
                     "--count", str(self.hostile), "--port", str(self.port),
                     "--behaviours", HOSTILE_KINDS],
                    quiet=True,
                )
            )  # fmt: skip

    def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.processes.clear()

    def ranges(self) -> list[dict[str, Any]]:
        """Half the good miners S19j Pro (asleep at the site's price), half S21 (mining)."""
        options = {"port": self.port, "timeout_seconds": 2.0, "confirm_timeout_seconds": 10.0}
        half = self.good // 2
        entries = [
            ("old", "S19j Pro", self.address(1), half),
            ("new", "S21", self.address(1 + half), self.good - half),
            ("bad", "S21", self.address(201), self.hostile),
        ]
        return [
            {"id_prefix": prefix, "model": model, "first_address": first, "count": count,
             "pools": ["main"], "options": options}
            for prefix, model, first, count in entries
            if count
        ]  # fmt: skip

    def config_toml(self, tick_seconds: float = 1.0) -> str:
        """The daemon's config: a static price between the two models' break-even prices."""
        lines = [
            "[site]",
            'name = "units"',
            "power_cap_kw = 5000.0",
            "[control]",
            f"tick_seconds = {tick_seconds}",
            "[guard]",
            "min_dwell_seconds = 0.0",
            "[api]",
            f'listen = "{self.address(254)}:{self.api_port}"',
            "[[market]]",
            'driver = "static"',
            "btc_price_usd = 100000.0",
            "difficulty = 1.2e14",
            "power_price_usd_per_mwh = 100.0",
            "[[pools]]",
            'name = "main"',
            f'url = "{POOL_URL}"',
            'user = "site.worker"',
        ]
        for entry in self.ranges():
            lines += [
                "[[device_ranges]]",
                f'id_prefix = "{entry["id_prefix"]}"',
                f'model = "{entry["model"]}"',
                f'first_address = "{entry["first_address"]}"',
                f"count = {entry['count']}",
                'pools = ["main"]',
                "[device_ranges.options]",
                *(f"{key} = {value}" for key, value in entry["options"].items()),
            ]
        return "\n".join(lines) + "\n"

    def asleep(self) -> tuple[int, int]:
        """(good miners that read back asleep, good miners), read from the host now."""
        return asyncio.run(self._asleep())

    async def _asleep(self) -> tuple[int, int]:
        config = parse_config(
            {
                "site": {"name": "probe", "power_cap_kw": 5000.0},
                "pools": [{"name": "main", "url": POOL_URL, "user": "w"}],
                "device_ranges": [r for r in self.ranges() if r["id_prefix"] != "bad"],
            },
            "<probe>",
            environ={},
        )
        pools = pools_of(config)
        count = 0
        total = 0
        for entry in config.device_ranges:
            driver = create_asic_driver(pools, entry.options, concurrency=64)
            devices = entry.devices()
            total += len(devices)
            samples = await asyncio.gather(
                *(driver.collect(d) for d in devices), return_exceptions=True
            )
            for sample in samples:
                if isinstance(sample, DriverError | OSError | TimeoutError):
                    continue
                if not isinstance(sample, BaseException) and (
                    sample.workload.kind is WorkloadKind.SLEEP
                ):
                    count += 1
        return count, total
