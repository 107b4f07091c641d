"""Braiins OS personality: telemetry over its cgminer-compatible API, control over its gRPC API.

Reads: hash rate, power, temperatures and pools come from the
cgminer-compatible API on port 4028 (summary, pools, stats), as for every
cgminer-family miner.  The workload comes from the public gRPC API
(drivers/asic/bos_client.py): ``GetMinerDetails.status`` PAUSED is sleep,
NORMAL is mining (any other status fails the read: the miner is neither
obeying a pause nor hashing), and the power level is the tuner's power
target in force (``GetTunerState``) over the device's nominal power; a
target wattmux set itself reads back as the level it asked for.  A tuner not
in power-target mode reads as level 1.0.

Commands: sleep is ``PauseMining``, wake is ``ResumeMining``, and
``mine(pool, level)`` sets ``SetPowerTarget`` (save and apply) to
``level x nominal power`` W, rounded, before resuming.  The firmware refuses
a target outside the model's range (INVALID_ARGUMENT): the outcome is
rejected with the firmware's message.  Pools are not switched over this API
(capability ``pool_switch`` is off): a miner on another pool is refused, not
moved.  Every command is confirmed by reading back until the miner reports
the workload or ``confirm_timeout_seconds`` (60 s by default: pausing and
resuming ramp the hashboards) pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping

from drivers.asic.bos_client import BosClient
from drivers.asic.bos_messages import (
    GET_COOLING_STATE,
    GET_HASHBOARDS,
    GET_LOCATE,
    REBOOT,
    SET_LOCATE,
    Empty,
    Hashboard,
    MinerStatus,
    SetLocateDeviceStatusRequest,
)
from drivers.asic.cgminer import CgminerClient, CgminerDriver, MinerReading
from drivers.asic.cgminer_parse import current_pool_url, parse_pools, rows, same_url
from drivers.asic.config import BraiinsOptions
from drivers.asic.registry import AsicPlugin
from drivers.errors import DriverError, MalformedReply, Rejected, Unavailable
from scheduler.core.model import (
    BoardHealth,
    Device,
    Health,
    Pool,
    Sample,
    Workload,
    WorkloadKind,
)


def board_health(board: Hashboard) -> BoardHealth:
    """One GetHashboards entry: 5 s hash rate, chips, board and hottest chip temperature."""
    stats = board.stats
    real = stats.real_hashrate if stats is not None else None
    rate = real.last_5s if real is not None else None
    chip = board.highest_chip_temp.temperature if board.highest_chip_temp is not None else None
    return BoardHealth(
        hashrate_hs=None if rate is None else rate.gigahash_per_second * 1e9,
        chips=None if board.chips_count is None else board.chips_count.value,
        board_temp_c=None if board.board_temp is None else board.board_temp.degree_c,
        chip_temp_c=None if chip is None else chip.degree_c,
    )


LEVEL_TOLERANCE = 0.001  # a read-back level this close to the request confirms it (3 W of 3 kW)


class BraiinsDriver(CgminerDriver):
    """Reads Braiins OS miners over cgminer + gRPC; pauses, resumes and sets power targets."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: BraiinsOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CgminerClient | None = None,
        api: BosClient | None = None,
    ) -> None:
        super().__init__(
            pools, options, concurrency=concurrency, clock=clock, sleep=sleep, client=client
        )
        self.api = api or BosClient(
            port=options.grpc_port,
            username=options.username,
            password=options.password.get_secret_value(),
            timeout_seconds=options.timeout_seconds,
            clock=clock,
        )
        self._set: dict[str, tuple[int, float]] = {}  # device id -> (watts, level) last set

    async def _paused(self, device: Device) -> bool:
        status = await self.api.status(device.id, device.address)
        if status is MinerStatus.PAUSED:
            return True
        if status is MinerStatus.NORMAL:
            return False
        name = status.name if isinstance(status, MinerStatus) else str(status)
        raise Unavailable(device.id, f"miner status {name}: neither paused nor mining")

    async def _level(self, device: Device) -> float:
        """The power level in force: the tuner's target over nominal power."""
        watts = await self.api.power_target_w(device.id, device.address)
        if watts is None:
            return 1.0
        kept = self._set.get(device.id)
        if kept is not None and kept[0] == watts:
            return kept[1]
        return round(watts / device.nominal_power_w, 3)

    async def _read(self, device: Device) -> MinerReading:
        reading = await super()._read(device)  # cgminer API: telemetry and pools
        asleep = await self._paused(device)
        return dataclasses.replace(
            reading, asleep=asleep, pool_url=None if asleep else reading.pool_url
        )

    async def _grpc_health(self, device: Device, health: Health | None) -> Health | None:
        """Boards (GetHashboards) and fans (GetCoolingState) as BOSer reports them over gRPC.

        The rest (rejects, uptime, firmware) stays from the cgminer API; when a gRPC read
        fails the cgminer API's health is kept (the poll does not fail for it).
        """
        try:
            boards_reply = await self.api.call(device.id, device.address, GET_HASHBOARDS, Empty())
            cooling = await self.api.call(device.id, device.address, GET_COOLING_STATE, Empty())
        except DriverError:
            return health
        boards = [board_health(b) for b in boards_reply.hashboards if b.enabled]
        return Health.of(
            boards,
            [fan.rpm for fan in cooling.fans],
            reject_ratio=None if health is None else health.reject_ratio,
            uptime_s=None if health is None else health.uptime_s,
            firmware=None if health is None else health.firmware,
            errors=() if health is None else health.errors,
        )

    async def collect(self, device: Device) -> Sample:
        """A fresh sample whose mining workload carries the power target read back."""
        sample = await super().collect(device)
        health = await self._grpc_health(device, sample.health)
        if health is not sample.health:
            sample = dataclasses.replace(sample, health=health)
        if sample.workload.kind is not WorkloadKind.MINE or sample.workload.pool is None:
            return sample
        level = await self._level(device)
        return dataclasses.replace(sample, workload=self._shared_mine(sample.workload.pool, level))

    async def observe(self, device: Device) -> Workload:
        """Read back the workload: gRPC status and power target, pool from the cgminer API."""
        if await self._paused(device):
            return Workload.sleep()
        url = current_pool_url(parse_pools(rows(await self._command(device, "pools"), "POOLS")))
        if url is None:
            raise MalformedReply(device.id, "mining but no pool is configured on the miner")
        return Workload.mine(self._pool_name(device, url), await self._level(device))

    async def _curtail(self, device: Device, action: str) -> None:
        if action == "sleep":
            await self.api.pause(device.id, device.address)
        else:
            await self.api.resume(device.id, device.address)

    async def _move(self, device: Device, workload: Workload, reading: MinerReading) -> None:
        if workload.kind is WorkloadKind.SLEEP:
            await super()._move(device, workload, reading)
            return
        pool = self._pools[workload.pool or ""]
        current = current_pool_url(reading.pools)
        if current is None or not same_url(current, pool.url):
            raise Rejected(
                device.id,
                f"miner is on {current}, not {pool.url}: pools are not switched over the "
                "Braiins OS API (set the pool group on the miner)",
            )
        await self.set_power_level(device, workload.power_level)
        if reading.asleep:
            await self._curtail(device, "wakeup")

    async def set_power_level(self, device: Device, power_level: float) -> None:
        """Set the tuner's power target to level x nominal power (skipped when already there)."""
        watts = round(power_level * device.nominal_power_w)
        if await self.api.power_target_w(device.id, device.address) != watts:
            await self.api.set_power_target(device.id, device.address, watts)
        self._set[device.id] = (watts, power_level)

    def _refusal(self, device: Device, workload: Workload) -> str | None:
        if workload.kind is WorkloadKind.MINE and workload.pool in self._pools:
            return None  # any level: the firmware checks the model's range
        return super()._refusal(device, workload)

    def _matches(self, requested: Workload, observed: Workload) -> bool:
        if not super()._matches(requested, observed):
            return False
        if requested.kind is not WorkloadKind.MINE:
            return True
        return abs(requested.power_level - observed.power_level) <= LEVEL_TOLERANCE

    async def set_locate(self, device: Device, on: bool) -> None:
        """ActionsService.SetLocateDeviceStatus."""
        request = SetLocateDeviceStatusRequest(enable=on)
        await self.api.call(device.id, device.address, SET_LOCATE, request)

    async def reboot(self, device: Device) -> None:
        """ActionsService.Reboot (verified by the cgminer API's uptime starting again)."""
        await self.api.call(device.id, device.address, REBOOT, Empty())

    async def locate_on(self, device: Device) -> bool:
        """ActionsService.GetLocateDeviceStatus."""
        reply = await self.api.call(device.id, device.address, GET_LOCATE, Empty())
        return bool(reply.enabled)

    async def switch_pool(self, device: Device, pool_url: str) -> None:
        """Refused: pools are not switched over the Braiins OS API here."""
        raise Rejected(device.id, "pool switching is not supported on Braiins OS (read only)")


PLUGINS = (
    AsicPlugin(
        tag="braiins",
        options=BraiinsOptions,
        factory=BraiinsDriver,
        simulator="drivers.sim.braiins_grpc:simulate",
        version_keys=("BOSer", "BOSminer"),
    ),
)
