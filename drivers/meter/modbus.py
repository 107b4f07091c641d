"""Site meter over Modbus TCP (pymodbus), read through a register map (``drivers.meter.maps``).

One connection, kept open and reopened on failure; every read has a deadline;
a reply that is an exception code, too short, not a number, or implausible is
a ``MalformedReply``, never a reading.  A SunSpec map is resolved once per
connection by walking the model chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.errors import MalformedReply, Timeout, Unavailable
from drivers.meter.base import MAX_SITE_POWER_W, MeterReading
from drivers.meter.maps import (
    SUNSPEC_END,
    SUNSPEC_MARKER,
    WIDTH,
    Point,
    RegisterMap,
    plausible_power_w,
)

MAX_SUNSPEC_MODELS = 64  # models walked before giving up


class ModbusMeter:
    """Reads a meter's site power (and import energy where mapped) over Modbus TCP."""

    def __init__(
        self,
        host: str,
        port: int,
        register_map: RegisterMap,
        *,
        unit_id: int = 1,
        timeout_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "meter",
    ) -> None:
        self.name = name
        self.map = register_map
        self.unit_id = unit_id
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_seconds, retries=0, reconnect_delay=0
        )
        self._model_start: int | None = None  # SunSpec: first data register of the model

    async def read(self) -> MeterReading:
        """One reading, or a DriverError (Timeout, MalformedReply, Unavailable)."""
        try:
            async with asyncio.timeout(self.timeout_seconds * 2):
                return await self._read()
        except TimeoutError:
            self.close()
            raise Timeout(self.name, f"no reply within {self.timeout_seconds * 2:g} s") from None
        except ModbusException as exc:
            self.close()
            raise Unavailable(self.name, f"modbus: {str(exc).splitlines()[0][:200]}") from None
        except OSError as exc:
            self.close()
            raise Unavailable(self.name, f"connection: {exc.strerror or exc}") from None

    async def _read(self) -> MeterReading:
        if not self._client.connected:
            if not await self._client.connect():
                raise Unavailable(self.name, "cannot connect")
            self._model_start = None
        power = await self._point(self.map.points["power_w"])
        if not plausible_power_w(power, MAX_SITE_POWER_W):
            raise MalformedReply(self.name, f"implausible site power {power!r} W")
        energy: float | None = None
        if "energy_import_kwh" in self.map.points:
            energy = await self._point(self.map.points["energy_import_kwh"])
        assert power is not None
        return MeterReading(power_w=power, observed_at=self._clock(), energy_import_kwh=energy)

    async def _registers(self, table: str, address: int, count: int) -> list[int]:
        reader = (
            self._client.read_input_registers
            if table == "input"
            else self._client.read_holding_registers
        )
        reply = await reader(address, count=count, device_id=self.unit_id)
        if reply.isError():
            raise MalformedReply(self.name, f"exception reply at {table} {address}: {reply}")
        registers = list(reply.registers)
        if len(registers) < count:
            raise MalformedReply(self.name, f"{len(registers)} registers, {count} asked")
        return registers[:count]

    async def _point(self, point: Point) -> float | None:
        if self.map.sunspec is None:
            assert point.address is not None
            registers = await self._registers(point.table, point.address, WIDTH[point.type])
            return self.map.decode(point, registers)
        start = await self._sunspec_start()
        assert point.model_offset is not None
        registers = await self._registers("holding", start + point.model_offset, WIDTH[point.type])
        value = self.map.decode(point, registers)
        if value is None or point.scale_offset is None:
            return value
        (sf,) = await self._registers("holding", start + point.scale_offset, 1)
        factor = sf - 0x10000 if sf >= 0x8000 else sf
        if factor == -0x8000 or not -10 <= factor <= 10:
            raise MalformedReply(self.name, f"scale factor {factor} out of range")
        return value * 10.0**factor

    async def _sunspec_start(self) -> int:
        """The first data register of the first listed SunSpec model (walked once per connection)."""
        if self._model_start is not None:
            return self._model_start
        sunspec = self.map.sunspec
        assert sunspec is not None
        if tuple(await self._registers("holding", sunspec.base, 2)) != SUNSPEC_MARKER:
            raise MalformedReply(self.name, f"no SunSpec marker at {sunspec.base}")
        address = sunspec.base + 2
        found: dict[int, int] = {}
        for _ in range(MAX_SUNSPEC_MODELS):
            model_id, length = await self._registers("holding", address, 2)
            if model_id == SUNSPEC_END:
                break
            found.setdefault(model_id, address + 2)
            address += 2 + length
            if address > 0xFFFF:
                break
        for model in sunspec.models:
            if model in found:
                self._model_start = found[model]
                return found[model]
        raise MalformedReply(
            self.name, f"none of the SunSpec models {sunspec.models} (found {sorted(found)[:10]})"
        )

    def close(self) -> None:
        """Close the connection (the next read reconnects)."""
        self._client.close()
        self._model_start = None
