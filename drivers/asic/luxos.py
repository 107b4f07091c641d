"""LuxOS personality: the cgminer driver plus power targets through profiles, ATM off around them.

LuxOS speaks the cgminer API on port 4028 and adds sessions (``logon`` /
``logoff``, one at a time, idle for a minute and gone), ``curtail`` sleep and
wakeup, and power profiles.  A power target is the workload's ``power_level``
times the device's nominal power; it is set with ``profileset <session>,<W>W``
(LuxOS picks the profile nearest that power).  The automatic tuner (ATM) would
move the profile again, so it is turned off (``atmset <session>,enabled=false``)
before the change and back on after, even when the change failed.

Reboot: ``rebootdevice <session>`` (LuxOS's API reference; it answers, then the
machine restarts and the session is gone), verified by the uptime (SUMMARY
``Elapsed``) starting again.

Locate: ``ledset <session>,red,blink`` (on) or ``red,auto`` (off); read back from
``config`` ``RedLed`` (the real reply carries ``RedLed`` / ``GreenLed``, "auto" when
the firmware drives them); blinking means on.

Read-back: the power level is the measured input power (POWER[0].Watts) over
the nominal power.  A read within ``power_tolerance`` of the level last set is
reported as that level, so noise does not look like drift; otherwise the
measured share, rounded to 0.01, is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from drivers.asic.cgminer import CgminerClient, CgminerDriver, MinerReading
from drivers.asic.cgminer_client import Reply
from drivers.asic.cgminer_parse import parse_power_w, rows, section
from drivers.asic.config import LuxosOptions
from drivers.asic.registry import AsicPlugin
from drivers.errors import MalformedReply
from scheduler.core.model import Device, Pool, Sample, Workload, WorkloadKind

MAX_POWER_LEVEL = 1.5


class LuxosDriver(CgminerDriver):
    """Reads and commands LuxOS miners: sleep, pools, and power levels via profiles."""

    OBSERVE_COMMANDS = "config+pools+power"

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: LuxosOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CgminerClient | None = None,
    ) -> None:
        super().__init__(
            pools, options, concurrency=concurrency, clock=clock, sleep=sleep, client=client
        )
        self._tolerance = options.power_tolerance
        self._targets: dict[str, float] = {}  # device id -> power level last set

    def power_level(self, device: Device, power_w: float) -> float:
        """The power level a measured power shows (the target when within tolerance)."""
        measured = power_w / device.nominal_power_w
        target = self._targets.get(device.id, 1.0)
        if abs(measured - target) <= self._tolerance:
            return target
        return min(MAX_POWER_LEVEL, max(0.01, round(measured, 2)))

    def _mining(self, device: Device, pool_name: str, joined: Reply) -> Workload:
        power = rows(section(joined, "power"), "POWER")
        watts = parse_power_w({}, [], power)
        if watts is None:
            raise MalformedReply(device.id, "power: no POWER Watts in the read-back")
        return Workload.mine(pool_name, self.power_level(device, watts))

    async def collect(self, device: Device) -> Sample:
        """A fresh sample whose mining workload carries the power level read back."""
        sample = await super().collect(device)
        if sample.workload.kind is not WorkloadKind.MINE or sample.workload.pool is None:
            return sample
        level = self.power_level(device, sample.power_w)
        return Sample(
            device_id=sample.device_id,
            observed_at=sample.observed_at,
            workload=Workload.mine(sample.workload.pool, level),
            power_w=sample.power_w,
            hashrate_hs=sample.hashrate_hs,
            temperature_c=sample.temperature_c,
            pool_url=sample.pool_url,
            pools_alive=sample.pools_alive,
            health=sample.health,
        )

    def _refusal(self, device: Device, workload: Workload) -> str | None:
        if workload.kind is WorkloadKind.MINE and workload.pool in self._pools:
            return None  # any power level: LuxOS profiles
        return super()._refusal(device, workload)

    def _matches(self, requested: Workload, observed: Workload) -> bool:
        if not super()._matches(requested, observed):
            return False
        if requested.kind is not WorkloadKind.MINE:
            return True
        return abs(requested.power_level - observed.power_level) <= self._tolerance

    async def _move(self, device: Device, workload: Workload, reading: MinerReading) -> None:
        await super()._move(device, workload, reading)
        if workload.kind is not WorkloadKind.MINE:
            return
        if not reading.asleep and self.power_level(device, reading.power_w) == workload.power_level:
            return  # already there (power_level snaps to the target within tolerance)
        await self.set_power_level(device, workload.power_level)

    async def set_power_level(self, device: Device, power_level: float) -> None:
        """Set a power target (ATM off, profileset <W>W, ATM back on) in one session."""
        watts = round(power_level * device.nominal_power_w)

        async def change(session_id: str) -> None:
            await self._command(device, "atmset", f"{session_id},enabled=false")
            try:
                await self._command(device, "profileset", f"{session_id},{watts}W")
            finally:
                await self._command(device, "atmset", f"{session_id},enabled=true")

        await self._in_session(device, change)
        self._targets[device.id] = power_level

    async def set_locate(self, device: Device, on: bool) -> None:
        """``ledset <session>,red,blink`` to find the machine, ``red,auto`` to stop."""
        state = "blink" if on else "auto"

        async def led(session_id: str) -> None:
            await self._command(device, "ledset", f"{session_id},red,{state}")

        await self._in_session(device, led)

    async def locate_on(self, device: Device) -> bool:
        """Whether ``config`` says the red LED blinks (or is lit)."""
        config = rows(await self._command(device, "config"), "CONFIG")
        red = config[0].get("RedLed") if config else None
        if not isinstance(red, str):
            raise MalformedReply(device.id, "config: no RedLed to read the locate LED from")
        return red.strip().lower() in ("blink", "on")

    async def reboot(self, device: Device) -> None:
        """``rebootdevice <session>``; the session dies with the reboot, so none is kept."""

        async def restart(session_id: str) -> None:
            await self._command(device, "rebootdevice", session_id)

        try:
            await self._in_session(device, restart)
        finally:
            self._sessions.pop(device.id, None)


PLUGINS = (
    AsicPlugin(
        tag="luxos",
        options=LuxosOptions,
        factory=LuxosDriver,
        simulator="drivers.sim.luxminer:simulate",
        version_keys=("LUXminer",),
    ),
)
