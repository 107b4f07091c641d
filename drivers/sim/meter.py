"""A simulated site meter served by pymodbus's own Modbus TCP server.

It reports what a callable says the site draws (``SimSite.total_power_w`` plus
a base load and noise, see ``site_draw``), encoded through a register map
(``drivers.meter.maps``): holding/input registers for plain maps, and for a
SunSpec map the "SunS" marker, a common model (1) and the meter model.  Every
read recomputes the registers, so the meter follows the miners as they ramp.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.meter.maps import WIDTH, RegisterMap

SUNSPEC_COMMON_LENGTH = 66
SUNSPEC_METER_LENGTH = 105
BLOCK_SIZE = 200  # registers of each plain table


def site_draw(
    miners_w: Callable[[], float],
    *,
    base_load_w: float = 0.0,
    noise_fraction: float = 0.0,
    rng: random.Random | None = None,
) -> Callable[[], float]:
    """The site's real draw: the miners plus a base load, with Gaussian noise (a fraction, 1 sigma)."""
    source = rng or random.Random(7)

    def draw() -> float:
        total = miners_w() + base_load_w
        return total * (1.0 + source.gauss(0.0, noise_fraction)) if noise_fraction else total

    return draw


class SimMeter:
    """A Modbus TCP meter on a loopback port; ``async with SimMeter(...) as meter: meter.port``."""

    def __init__(
        self,
        register_map: RegisterMap,
        power_w: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit_id: int = 1,
        energy_kwh: Callable[[], float] = lambda: 0.0,
        power_scale_factor: int = 1,
    ) -> None:
        self.map = register_map
        self.power_w = power_w
        self.energy_kwh = energy_kwh
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.reads = 0
        # SunSpec int16 watts at sunssf 1 (10 W steps) reach 327 kW; pick a factor that fits.
        self.power_scale_factor = power_scale_factor
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._holding_start, self._input_start = 0, 0
        self._model_start = 0
        if register_map.sunspec is not None:
            base = register_map.sunspec.base
            self._holding_start = base
            self._model_start = base + 2 + 2 + SUNSPEC_COMMON_LENGTH + 2
        else:
            holding = [p.address for p in register_map.points.values() if p.table == "holding"]
            inputs = [p.address for p in register_map.points.values() if p.table == "input"]
            self._holding_start = min((a for a in holding if a is not None), default=0)
            self._input_start = min((a for a in inputs if a is not None), default=0)

    def _values(self) -> dict[tuple[str, int], int]:
        """(table, address) -> register for every point, from the current draw."""
        out: dict[tuple[str, int], int] = {}
        values = {"power_w": self.power_w(), "energy_import_kwh": self.energy_kwh()}
        sunspec = self.map.sunspec is not None
        for name, point in self.map.points.items():
            value = values[name]
            if not math.isfinite(value):
                continue
            scale_factor = 0
            if sunspec and point.scale_offset is not None:
                scale_factor = self.power_scale_factor if name == "power_w" else 0
                out[("holding", self._model_start + point.scale_offset)] = scale_factor & 0xFFFF
            address = (
                self._model_start + (point.model_offset or 0) if sunspec else point.address or 0
            )
            table = "holding" if sunspec else point.table
            for i, word in enumerate(self.map.encode(point, value, scale_factor)):
                out[(table, address + i)] = word
        if sunspec:
            assert self.map.sunspec is not None
            base = self.map.sunspec.base
            out[("holding", base)], out[("holding", base + 1)] = 0x5375, 0x6E53
            out[("holding", base + 2)] = 1
            out[("holding", base + 3)] = SUNSPEC_COMMON_LENGTH
            header = self._model_start - 2
            out[("holding", header)] = self.map.sunspec.models[0]
            out[("holding", header + 1)] = SUNSPEC_METER_LENGTH
            out[("holding", self._model_start + SUNSPEC_METER_LENGTH)] = 0xFFFF
            out[("holding", self._model_start + SUNSPEC_METER_LENGTH + 1)] = 0
        return out

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        if set_values is not None:
            return None
        self.reads += 1
        table = "input" if function_code == 4 else "holding"
        for (kind, at), word in self._values().items():
            index = at - start_address
            if kind == table and 0 <= index < len(current_registers):
                current_registers[index] = word
        return None

    def _device(self) -> SimDevice:
        size = BLOCK_SIZE
        if self.map.sunspec is not None:
            size = 2 + 2 + SUNSPEC_COMMON_LENGTH + 2 + SUNSPEC_METER_LENGTH + 2
        widths = [WIDTH[p.type] for p in self.map.points.values()]
        size = max(size, max(widths) + 1)
        holding = [SimData(self._holding_start, count=size, datatype=DataType.REGISTERS)]
        inputs = [SimData(self._input_start, count=size, datatype=DataType.REGISTERS)]
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=self.unit_id, simdata=(bits, list(bits), holding, inputs), action=self._action
        )

    async def start(self) -> None:
        """Listen (port 0: a free one, then ``self.port`` holds it)."""
        if self.port == 0:
            self.port = _free_port(self.host)
        self._server = ModbusTcpServer(self._device(), address=(self.host, self.port))
        self._task = asyncio.create_task(self._server.serve_forever(), name="sim.meter")
        for _ in range(200):  # until the listener is up
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise OSError(f"simulated meter did not listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def __aenter__(self) -> SimMeter:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
