"""What a site meter reports, and the protocol every meter source speaks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

MAX_SITE_POWER_W: Final = 2e9  # 2 GW: any reading beyond is malformed


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One reading of the site meter: real power in W (positive = import), when it was read."""

    power_w: float
    observed_at: float  # monotonic clock of the reader
    energy_import_kwh: float | None = None


class MeterSource(Protocol):
    """A site meter that can be read on demand (Modbus, HTTP)."""

    name: str

    async def read(self) -> MeterReading:
        """One reading, or a ``DriverError``."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...
