"""asic-rs personality (optional extra ``wattmux[asic-rs]``): miners through the pyasic-rs bindings.

For firmwares wattmux does not speak natively, the ``pyasic_rs`` library
(Python bindings of the asic-rs Rust crate) identifies the miner on the
vendor's default ports (the cgminer API on 4028, web interfaces on 80) and
drives it.  This driver adapts it to wattmux's contracts:

- collect(): ``get_data()``; power is ``wattage`` (a miner the library reads
  no wattage or hash rate from is unavailable: the library answers a
  vanished miner with empty fields rather than an error), hash rate is
  converted to H/s, the pool is the active one in ``pools``.
- Deep health from the same read: per board the hash rate, working chips,
  board temperature and the hotter of the inlet / outlet chip temperatures;
  fan speeds, uptime, firmware version and the miner's messages (code and
  text) as error codes; no share counts, so no reject ratio.  Bounded like
  every driver's health (``Health.of_raw``).  A board's chip temperature is
  what the library reports for it (from LuxOS: the mean of the board's chip
  sensors), so the hottest chip seen through this driver may be cooler than
  the hottest chip there is; the Guard still takes the hottest figure it has.
- Workload read back: sleep when the library reports no hash rate and no
  active pool, mining when it hashes on the requested pool.  The library's
  ``is_mining`` is not used: on LuxOS it stays true while curtailed.
- apply(): sleep is ``pause()``, wake is ``resume()`` (where the library's
  ``supports_pause`` / ``supports_resume`` say so), then read back until the
  workload shows or ``confirm_timeout_seconds`` pass.  Power levels other
  than 1.0 and pool moves are refused: wattmux has no simulator the
  library's power-limit path could be tested against.

The import is guarded: configuring a device with ``driver = "asic-rs"``
without the extra raises a Fatal naming it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drivers.asic.cgminer_parse import same_url
from drivers.asic.config import AsicRsOptions
from drivers.asic.registry import AsicPlugin
from drivers.bounds import implausible_reading
from drivers.errors import DriverError, Fatal, MalformedReply, Rejected, Timeout, Unavailable
from scheduler.core.model import (
    MAX_BOARDS,
    MAX_ERRORS,
    MAX_FANS,
    Device,
    Health,
    Outcome,
    OutcomeStatus,
    Pool,
    Sample,
    Workload,
    WorkloadKind,
)

try:
    import pyasic_rs
    from pyasic_rs.data import HashRateUnit

    HAVE_ASIC_RS = True
except ImportError:  # the optional extra is not installed
    HAVE_ASIC_RS = False

EXTRA_HINT = "the asic-rs driver needs the optional extra: pip install 'wattmux[asic-rs]'"


class AsicRsDriver:
    """Reads, sleeps and wakes miners through pyasic-rs; confirms by reading back."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: AsicRsOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not HAVE_ASIC_RS:
            raise Fatal("asic-rs", EXTRA_HINT)
        self._pools = dict(pools)
        self._options = options
        self._clock = clock
        self._sleep = sleep
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._factory = (
            pyasic_rs.MinerFactory()
            .with_identification_timeout_secs(max(1, round(options.timeout_seconds)))
            .with_connectivity_timeout_secs(max(1, round(options.timeout_seconds)))
        )
        self._miners: dict[str, Any] = {}  # address -> pyasic_rs.Miner

    async def _library(self, device: Device, call: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run one library call under the deadline; its errors become DriverErrors."""
        try:
            async with self._slots, asyncio.timeout(self._options.timeout_seconds):
                return await call()
        except TimeoutError as exc:
            raise Timeout(
                device.id, f"{what}: no answer in {self._options.timeout_seconds:g} s"
            ) from exc
        except (RuntimeError, OSError, ValueError) as exc:  # what the bindings raise
            raise Unavailable(device.id, f"{what}: {exc}") from exc

    async def _miner(self, device: Device) -> Any:
        miner = self._miners.get(device.address)
        if miner is None:
            miner = await self._library(
                device, lambda: self._factory.get_miner(device.address), "identify"
            )
            if miner is None:
                raise Unavailable(device.id, f"asic-rs identifies no miner at {device.address}")
            if self._options.username and self._options.password is not None:
                miner.set_auth(self._options.username, self._options.password.get_secret_value())
            self._miners[device.address] = miner
        return miner

    def _pool_name(self, url: str) -> str:
        return next((n for n, p in self._pools.items() if same_url(p.url, url)), url)

    async def collect(self, device: Device) -> Sample:
        """A fresh sample from the library's get_data(); Unavailable when it read nothing."""
        miner = await self._miner(device)
        data = await self._library(device, miner.get_data, "get_data")
        if data.wattage is None or data.hashrate is None:
            self._miners.pop(device.address, None)  # identify again next time
            raise Unavailable(device.id, "asic-rs read no wattage or hash rate")
        hashrate_hs = float(data.hashrate.as_unit(HashRateUnit.Hash))
        active = [str(p.url) for g in data.pools for p in g.pools if p.active]
        if hashrate_hs <= 0 and not active:
            workload = Workload.sleep()
        elif active:
            workload = Workload.mine(self._pool_name(active[0]))
        else:
            raise Unavailable(device.id, "hashing but no active pool reported")
        implausible = implausible_reading(
            hashrate_hs, float(data.wattage), data.average_temperature
        )
        if implausible is not None:
            raise MalformedReply(device.id, f"implausible reading: {implausible}")
        return Sample(
            device_id=device.id,
            observed_at=self._clock(),
            workload=workload,
            power_w=float(data.wattage),
            hashrate_hs=hashrate_hs,
            temperature_c=data.average_temperature,
            pool_url=active[0] if active else None,
            health=_health(data),
        )

    def _refusal(self, workload: Workload) -> str | None:
        if workload.kind in (WorkloadKind.OFF, WorkloadKind.AI):
            return f"an ASIC through asic-rs cannot do {workload.kind.value}"
        if workload.kind is WorkloadKind.MINE:
            if workload.pool not in self._pools:
                return f"unknown pool {workload.pool!r}"
            if workload.power_level != 1.0:
                return "power levels other than 1.0 are not supported through asic-rs"
        return None

    async def _command(self, device: Device, workload: Workload) -> None:
        miner = await self._miner(device)
        asleep = workload.kind is WorkloadKind.SLEEP
        supported = miner.supports_pause if asleep else miner.supports_resume
        if not supported:
            raise Rejected(
                device.id, f"asic-rs cannot {'pause' if asleep else 'resume'} this miner"
            )
        call = miner.pause if asleep else miner.resume
        if not await self._library(device, call, "pause" if asleep else "resume"):
            raise Rejected(device.id, "asic-rs reports the command failed")

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """Pause or resume, then read back until the workload shows; never raises."""
        refusal = self._refusal(workload)
        if refusal is not None:
            return Outcome(device.id, workload, OutcomeStatus.REJECTED, detail=refusal)
        try:
            await self._command(device, workload)
        except DriverError as exc:
            status = (
                OutcomeStatus.REJECTED
                if isinstance(exc, Rejected | Fatal)
                else OutcomeStatus.UNAVAILABLE
            )
            return Outcome(device.id, workload, status, detail=f"{exc.reason}: {exc.message}")
        deadline = self._clock() + self._options.confirm_timeout_seconds
        observed: Workload | None = None
        while True:
            try:
                observed = (await self.collect(device)).workload
            except DriverError:
                observed = None
            if observed == workload:
                return Outcome(device.id, workload, OutcomeStatus.CONFIRMED, observed)
            remaining = deadline - self._clock()
            if remaining <= 0:
                detail = f"device still reports {observed} after the deadline"
                return Outcome(device.id, workload, OutcomeStatus.UNCONFIRMED, observed, detail)
            await self._sleep(min(self._options.confirm_interval_seconds, remaining))


PLUGINS = (AsicPlugin(tag="asic-rs", options=AsicRsOptions, factory=AsicRsDriver),)


def _health(data: Any) -> Health:
    """Deep health from what the library read (see the module docstring)."""
    boards = []
    for board in list(data.hashboards)[:MAX_BOARDS]:
        rate = board.hashrate
        chip_temps = [
            t
            for t in (board.inlet_chip_temperature, board.outlet_chip_temperature)
            if t is not None
        ]
        boards.append(
            (
                None if rate is None else float(rate.as_unit(HashRateUnit.Hash)) / 1e9,
                board.working_chips,
                board.board_temperature,
                max(chip_temps) if chip_temps else None,
            )
        )
    fans = [fan.rpm for fan in list(data.fans)[:MAX_FANS] if fan.rpm is not None]
    uptime = data.uptime
    return Health.of_raw(
        boards,
        fans,
        uptime_s=None if uptime is None else uptime.total_seconds(),
        firmware=data.firmware_version,
        errors=[f"{m.code}: {m.message}" for m in list(data.messages)[:MAX_ERRORS]],
    )
