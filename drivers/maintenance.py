"""What a driver offers for maintenance: reboot and the locate LED (protocols).

Pool set and power profile use what the drivers already have (``switch_pool``,
``set_power_level``, read back by ``observe``).  A driver offers reboot or locate
by having these methods; ``scheduler.control.device_actions`` checks with isinstance
and refuses, by name, an action the device's firmware driver lacks.  Every write
is verified by reading the state back: locate by ``locate_on``, reboot by the
uptime the firmware reports starting again (``Sample.health.uptime_s``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from scheduler.core.model import Device


@runtime_checkable
class Rebootable(Protocol):
    """The firmware can be told to reboot."""

    async def reboot(self, device: Device) -> None:
        """Ask the miner to reboot (it answers, then restarts)."""
        ...


@runtime_checkable
class Locatable(Protocol):
    """The firmware blinks an LED to find the machine, and says whether it does."""

    async def set_locate(self, device: Device, on: bool) -> None:
        """Start (on) or stop blinking the locate LED."""
        ...

    async def locate_on(self, device: Device) -> bool:
        """Whether the locate LED blinks now (read back)."""
        ...
