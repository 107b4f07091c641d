"""SimSite: many simulated miners, each on its own loopback address, run together."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Sequence

from drivers.asic.registry import ASIC_DRIVERS
from drivers.registry import load_simulator
from drivers.sim.braiins_grpc import SimBraiinsGrpc
from drivers.sim.miner import ConnectionStats, SimMiner, SimServer, Simulator, simulate
from scheduler.core.model import TERA, Device, DeviceKind, Pool

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def simulator(driver: str) -> Simulator:
    """The simulator of a firmware tag (the cgminer simulator where none is declared)."""
    entry = ASIC_DRIVERS.get(driver) if driver in ASIC_DRIVERS else None
    if entry is None or entry.simulator is None:
        return simulate
    found: Simulator = load_simulator(entry.simulator)
    return found


def simulated_firmwares() -> tuple[str, ...]:
    """The firmware tags that declare a simulator of their own."""
    return tuple(entry.tag for entry in ASIC_DRIVERS.entries() if entry.simulator is not None)


class SimSite:
    """An async context manager running one SimMiner per device, awake on the first pool.

    Each device is played by the simulator its firmware's registry entry names
    (``drivers.asic.registry``); a firmware without one is played by the cgminer
    simulator.  A device whose driver is ``whatsminer`` gets a SimWhatsminer (API
    v2 on the site's port, API v3 on a free port: ``site.miners[id].v3.port``).

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
        self.miners: dict[str, SimMiner] = {}
        self.companions: dict[str, SimServer] = {}
        """Each device's second server where its firmware has one (Braiins OS: gRPC)."""
        for device in devices:
            miner, companion = simulator(device.driver)(
                device,
                pools,
                companion_port=braiins_grpc_port,
                port=port,
                ramp_seconds=ramp_seconds,
                thermal_tau_seconds=thermal_tau_seconds,
                clock=clock,
                ambient_c=ambient_c,
                noise_fraction=noise_fraction,
                connection_stats=self.connections,
            )
            self.miners[device.id] = miner
            if companion is not None:
                self.companions[device.id] = companion
        self._clock = clock

    @property
    def braiins(self) -> dict[str, SimBraiinsGrpc]:
        """The gRPC servers of the devices that play Braiins OS."""
        return {
            device_id: server
            for device_id, server in self.companions.items()
            if isinstance(server, SimBraiinsGrpc)
        }

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
        servers: list[SimServer] = [*self.miners.values(), *self.companions.values()]
        results = await asyncio.gather(
            *(server.start() for server in servers), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]

    async def stop(self) -> None:
        """Stop every miner (idempotent)."""
        servers: list[SimServer] = [*self.miners.values(), *self.companions.values()]
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
