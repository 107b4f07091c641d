"""SimSite: many simulated miners, each on its own loopback address, run together."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Sequence

from drivers.sim.braiins_grpc import SimBraiinsGrpc
from drivers.sim.miner import ConnectionStats, SimMiner
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.core.model import TERA, Device, DeviceKind, Pool

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class SimSite:
    """An async context manager running one SimMiner per device, awake on the first pool.

    A device whose driver is ``whatsminer`` gets a SimWhatsminer (API v2 on the
    site's port, API v3 on a free port: ``site.miners[id].v3.port``).

    Each miner listens on ``device.address`` and the site's ``port`` (0 picks a
    free port per miner; ``site.devices`` then carries the bound ports).
    Addresses must lie in 127.0.0.0/8; on Linux the whole block reaches the
    loopback interface without any setup.

    A device whose ``driver`` is ``braiins`` plays Braiins OS: its cgminer
    API is the read path and its gRPC API (``site.braiins[id]``, on
    ``braiins_grpc_port``, 0 = a free port each) takes the commands.
    """

    def __init__(
        self,
        devices: Sequence[Device],
        pools: Sequence[Pool],
        *,
        port: int = 4028,
        ramp_seconds: float = 0.0,
        thermal_tau_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        ambient_c: float = 25.0,
        noise_fraction: float = 0.01,
        braiins_grpc_port: int = 0,
    ) -> None:
        seen: set[tuple[str, int]] = set()
        for device in devices:
            try:
                address = ipaddress.ip_address(device.address)
            except ValueError as exc:
                raise ValueError(
                    f"device {device.id}: {device.address!r} is not an IP address"
                ) from exc
            if address not in LOOPBACK:
                raise ValueError(
                    f"device {device.id}: {device.address} is outside 127.0.0.0/8; "
                    "the simulator only listens on loopback"
                )
            if port and (device.address, port) in seen:
                raise ValueError(f"device {device.id}: {device.address}:{port} is used twice")
            seen.add((device.address, port))
        if len({d.id for d in devices}) != len(devices):
            raise ValueError("device ids must be unique")
        self.connections = ConnectionStats()
        self.miners: dict[str, SimMiner] = {
            device.id: (SimWhatsminer if device.driver == "whatsminer" else SimMiner)(
                device,
                pools,
                port=port,
                ramp_seconds=ramp_seconds,
                thermal_tau_seconds=thermal_tau_seconds,
                clock=clock,
                ambient_c=ambient_c,
                noise_fraction=noise_fraction,
                connection_stats=self.connections,
            )
            for device in devices
        }
        self.braiins: dict[str, SimBraiinsGrpc] = {}
        for device in devices:
            if device.driver == "braiins":
                miner = self.miners[device.id]
                miner.become_braiins_os()
                self.braiins[device.id] = SimBraiinsGrpc(miner, port=braiins_grpc_port, clock=clock)
        self._clock = clock

    @property
    def devices(self) -> list[Device]:
        """The devices with the ports their miners actually listen on."""
        return [dataclasses.replace(m.device, port=m.port) for m in self.miners.values()]

    def total_power_w(self) -> float:
        """Input power of the whole site now, in W."""
        now = self._clock()
        return sum(miner.power_w(now) for miner in self.miners.values())

    def set_pool_alive(self, url: str, alive: bool) -> None:
        """A pool outage (or its end) seen by every miner of the site."""
        for miner in self.miners.values():
            miner.set_pool_url_alive(url, alive)

    async def start(self) -> None:
        """Start every miner; if one cannot listen, stop the others and raise."""
        servers: list[SimMiner | SimBraiinsGrpc] = [*self.miners.values(), *self.braiins.values()]
        results = await asyncio.gather(
            *(server.start() for server in servers), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    async def stop(self) -> None:
        """Stop every miner (idempotent)."""
        servers: list[SimMiner | SimBraiinsGrpc] = [*self.miners.values(), *self.braiins.values()]
        await asyncio.gather(*(server.stop() for server in servers))

    async def __aenter__(self) -> SimSite:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def range_devices(
    first_address: str,
    count: int,
    port: int,
    *,
    id_prefix: str = "sim",
    model: str = "S21",
    hashrate_ths: float = 200.0,
    power_w: float = 3500.0,
    sleep_power_w: float = 15.0,
    pools: tuple[str, ...] = (),
    driver: str = "cgminer",
) -> list[Device]:
    """Identical ASICs on consecutive loopback addresses, numbered as config device ranges are."""
    start = ipaddress.IPv4Address(first_address)
    width = max(3, len(str(count)))
    return [
        Device(
            id=f"{id_prefix}-{i + 1:0{width}d}",
            kind=DeviceKind.ASIC,
            model=model,
            driver=driver,
            address=str(start + i),
            port=port,
            nominal_hashrate_hs=hashrate_ths * TERA,
            nominal_power_w=power_w,
            sleep_power_w=sleep_power_w,
            pools=pools,
        )
        for i in range(count)
    ]
