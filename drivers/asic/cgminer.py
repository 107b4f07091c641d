"""Driver for the cgminer-family API (bmminer, Whatsminer, LuxOS): collect, apply, confirm.

Telemetry reads every report command joined with ``+`` in one connection
(see drivers/asic/cgminer_parse.py for where each Sample field comes from);
firmware without joined commands is read one command at a time.

Sleep and wake follow LuxOS: ``logon`` returns SESSION[0].SessionID, then
``curtail`` with ``<session>,sleep`` or ``<session>,wakeup``, then ``logoff``.
In ``send()`` the ``logoff`` is owed, not sent: the command is acknowledged
once the miner accepted it, and ``confirm()`` logs off before reading back
(or ``send()`` itself, when it ends with an outcome).  A fleet-wide curtail
thus reaches every miner before any connection goes to housekeeping.
Pool moves use cgminer's ``addpool`` and ``switchpool`` (which also enables the pool).

Verify after write: apply() never trusts an accepted command.  It reads the
device back (``config+pools`` only, the cheapest read that shows the workload)
every confirm_interval_seconds until the device reports the requested
workload or confirm_timeout_seconds pass.  Sleep is sent without a read
first: curtail sleep is idempotent, and the read-back decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from drivers.asic.cgminer_client import (
    CgminerClient,
    Reply,
    decode_reply,
    raise_for_status,
    status_entry,
)
from drivers.asic.cgminer_parse import (
    PoolEntry,
    current_pool_url,
    parse_chip_temperature_c,
    parse_curtailed,
    parse_hashrate_hs,
    parse_pools,
    parse_power_w,
    pools_alive,
    rows,
    same_url,
    section,
)
from drivers.asic.config import CgminerFamilyOptions, CgminerOptions
from drivers.asic.health_parse import cgminer_health, hottest_chip_c, stats_board_rows
from drivers.asic.registry import AsicPlugin
from drivers.bounds import implausible_reading
from drivers.errors import DriverError, Fatal, MalformedReply, Rejected, Unavailable
from scheduler.core.model import (
    Device,
    Health,
    Outcome,
    OutcomeStatus,
    Pool,
    Sample,
    Workload,
    WorkloadKind,
)

__all__ = [
    "CgminerClient",
    "CgminerDriver",
    "current_pool_url",
    "decode_reply",
    "parse_chip_temperature_c",
    "parse_hashrate_hs",
    "parse_pools",
    "rows",
    "same_url",
]

logger = logging.getLogger(__name__)

TELEMETRY_COMMANDS = ("summary", "pools", "stats", "config", "power")
REQUIRED_SECTIONS = frozenset({"summary", "pools"})
# True inside send(): a LuxOS logoff is owed to confirm() instead of sent (see _log_off).
_OWE_LOGOFF: ContextVar[bool] = ContextVar("cgminer_owe_logoff", default=False)


@dataclass(frozen=True, slots=True)
class MinerReading:
    """One full read of a miner: mode, pools, power, hash rate, temperature."""

    asleep: bool
    pool_url: str | None
    pools: tuple[PoolEntry, ...]
    power_w: float
    hashrate_hs: float
    temperature_c: float | None
    observed_at: float
    health: Health | None = None


class CgminerDriver:
    """Reads and commands cgminer-family miners; apply() confirms by reading back."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: CgminerFamilyOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CgminerClient | None = None,
    ) -> None:
        self._pools = dict(pools)
        self._options = options
        self._clock = clock
        self._sleep = sleep
        self._client = client or CgminerClient(
            timeout_seconds=options.timeout_seconds, concurrency=concurrency
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._workloads: dict[tuple[str, float], Workload] = {}
        self._sessions: dict[str, tuple[str, float]] = {}  # device id -> (session id, last used)
        self._logoffs: dict[str, str] = {}  # device id -> session id owed a logoff (see send)
        # (device pools, (URL, alive) report) -> the same report by pool name, shared
        self._alive_seen: dict[
            tuple[tuple[str, ...], tuple[tuple[str, bool], ...]], tuple[tuple[str, bool], ...]
        ] = {}

    def _lock(self, device: Device) -> asyncio.Lock:
        lock = self._locks.get(device.id)
        if lock is None:  # not setdefault(): that builds a Lock on every call
            lock = self._locks[device.id] = asyncio.Lock()
        return lock

    async def _command(self, device: Device, command: str, parameter: str | None = None) -> Reply:
        return await self._client.command(
            device.address, device.port, command, parameter, source=device.id
        )

    async def _sections(self, device: Device) -> dict[str, Reply | None]:
        """Read every telemetry command, joined in one connection when the firmware can."""
        try:
            joined = await self._command(device, "+".join(TELEMETRY_COMMANDS))
        except Rejected:  # firmware without joined commands: ask one at a time
            joined = None
        found: dict[str, Reply | None] = {}
        for name in TELEMETRY_COMMANDS:
            if joined is not None:
                reply = section(joined, name)
                entry = status_entry(reply) if reply is not None else None
                if reply is not None and entry is not None and entry.get("STATUS") in ("E", "F"):
                    if name in REQUIRED_SECTIONS:
                        raise_for_status(reply, device.id, name)
                    reply = None
            else:
                try:
                    reply = await self._command(device, name)
                except Rejected:
                    if name in REQUIRED_SECTIONS:
                        raise
                    reply = None
            if reply is None and name in REQUIRED_SECTIONS:
                raise MalformedReply(device.id, f"reply has no {name} section")
            found[name] = reply
        return found

    async def _read(self, device: Device) -> MinerReading:
        sections = await self._sections(device)
        summary_rows = rows(sections["summary"], "SUMMARY")
        if not summary_rows:
            raise MalformedReply(device.id, "summary has no SUMMARY row")
        stats = rows(sections["stats"], "STATS")
        hashrate_hs = parse_hashrate_hs(summary_rows[0])
        if hashrate_hs is None:
            raise MalformedReply(device.id, "SUMMARY has no MHS/GHS hash rate")
        power_w = parse_power_w(summary_rows[0], stats, rows(sections["power"], "POWER"))
        if power_w is None:
            power_w = self._missing_power_w(device, hashrate_hs)
        pools = parse_pools(rows(sections["pools"], "POOLS"))
        asleep = parse_curtailed(rows(sections["config"], "CONFIG"))
        boards = stats_board_rows(stats)
        chip = hottest_chip_c(boards)
        return MinerReading(
            asleep=asleep,
            pool_url=None if asleep else current_pool_url(pools),
            pools=pools,
            power_w=power_w,
            hashrate_hs=hashrate_hs,
            # the hottest chip of the boards parsed once for the health, else any chip sensor
            temperature_c=parse_chip_temperature_c(stats) if chip is None else chip,
            observed_at=self._clock(),
            health=cgminer_health(summary_rows[0], stats, boards),
        )

    def _shared_mine(self, pool_name: str, power_level: float = 1.0) -> Workload:
        """One Workload object per (pool, level), shared by every sample (memory at 10k devices)."""
        key = (pool_name, power_level)
        workload = self._workloads.get(key)
        if workload is None:
            workload = self._workloads[key] = Workload.mine(pool_name, power_level)
        return workload

    def _missing_power_w(self, device: Device, hashrate_hs: float) -> float:
        """What to do when the firmware reports no power: here, refuse to guess."""
        raise MalformedReply(device.id, "no power reading (POWER Watts, SUMMARY Power)")

    def _pool_name(self, device: Device, url: str) -> str:
        """Return the configured pool name for a URL (device's own pools first), else the URL."""
        names = [*device.pools, *self._pools]
        return next(
            (n for n in names if n in self._pools and same_url(self._pools[n].url, url)), url
        )

    async def collect(self, device: Device) -> Sample:
        """Return a fresh sample of the device; raise a DriverError when it cannot be read."""
        reading = await self._read(device)
        implausible = implausible_reading(
            reading.hashrate_hs, reading.power_w, reading.temperature_c
        )
        if implausible is not None:
            raise MalformedReply(device.id, f"implausible reading: {implausible}")
        if reading.asleep:
            workload = Workload.sleep()
        elif reading.pool_url is None:
            raise MalformedReply(device.id, "awake but no pool is configured on the miner")
        else:
            workload = self._shared_mine(self._pool_name(device, reading.pool_url))
        return Sample(
            device_id=device.id,
            observed_at=reading.observed_at,
            workload=workload,
            power_w=reading.power_w,
            hashrate_hs=reading.hashrate_hs,
            temperature_c=reading.temperature_c,
            pool_url=sys.intern(reading.pool_url) if reading.pool_url else None,
            pools_alive=self._pools_alive(device, reading.pools),
            health=reading.health,
        )

    def _pools_alive(
        self, device: Device, pools: tuple[PoolEntry, ...]
    ) -> tuple[tuple[str, bool], ...]:
        """What the miner sees of its pools, by configured name; one shared tuple per distinct value."""
        report = tuple(pools_alive(pools))
        key = (device.pools, report)
        shared = self._alive_seen.get(key)
        if shared is None:
            shared = tuple((self._pool_name(device, url), alive) for url, alive in report)
            if len(self._alive_seen) < 4096:
                self._alive_seen[key] = shared
        return shared

    OBSERVE_COMMANDS = "config+pools"

    async def observe(self, device: Device) -> Workload:
        """Read only what shows the workload (config and pools): the cheap read-back."""
        try:
            joined = await self._command(device, self.OBSERVE_COMMANDS)
        except Rejected:  # firmware without joined commands
            return (await self.collect(device)).workload
        pools_reply = section(joined, "pools")
        if pools_reply is None:
            raise MalformedReply(device.id, "reply has no pools section")
        raise_for_status(pools_reply, device.id, "pools")
        config_reply = section(joined, "config")
        entry = status_entry(config_reply) if config_reply is not None else None
        asleep = (
            entry is not None
            and entry.get("STATUS") not in ("E", "F")
            and parse_curtailed(rows(config_reply, "CONFIG"))
        )
        if asleep:
            return Workload.sleep()
        url = current_pool_url(parse_pools(rows(pools_reply, "POOLS")))
        if url is None:
            raise MalformedReply(device.id, "awake but no pool is configured on the miner")
        return self._mining(device, self._pool_name(device, url), joined)

    def _mining(self, device: Device, pool_name: str, joined: Reply) -> Workload:
        """The mining workload a read shows (subclasses add the power level)."""
        return Workload.mine(pool_name)

    async def _curtail(self, device: Device, action: str) -> None:
        """Run curtail <session>,<action> in a LuxOS session."""
        await self._in_session(
            device, lambda sid: self._command(device, "curtail", f"{sid},{action}")
        )

    async def _in_session(self, device: Device, body: Callable[[str], Awaitable[object]]) -> None:
        """Run ``body(session_id)`` in a LuxOS session (kept, new, or taken over when one is open)."""
        owed = self._logoffs.pop(device.id, None)
        if owed is not None:  # a session this send already opened (wakeup, then a profile)
            try:
                await body(owed)
            except Rejected:
                pass  # expired or taken over: log on again
            except BaseException:
                self._logoffs[device.id] = owed  # still open: owed as before
                raise
            else:
                await self._log_off(device, owed)
                return
        kept = self._sessions.get(device.id)
        if kept is not None and self._clock() - kept[1] < self._options.session_reuse_seconds:
            try:
                await body(kept[0])
            except Rejected:
                self._sessions.pop(device.id, None)  # expired or taken over: log on again
            else:
                self._sessions[device.id] = (kept[0], self._clock())
                return
        owned = True
        try:
            reply = await self._command(device, "logon")
        except Rejected as refused:  # one session at a time: take over the open one
            try:
                reply = await self._command(device, "session")
            except Rejected:
                raise refused from None
            owned = False
        session_rows = rows(reply, "SESSION")
        session_id = session_rows[0].get("SessionID") if session_rows else None
        if not isinstance(session_id, str) or not session_id:
            raise Rejected(device.id, "logon: no session granted and none open")
        keep = owned and self._options.session_reuse_seconds > 0
        try:
            await body(session_id)
        finally:
            if keep:
                self._sessions[device.id] = (session_id, self._clock())
            elif owned:
                await self._log_off(device, session_id)

    async def _log_off(self, device: Device, session_id: str) -> None:
        """Log off now, or owe it until confirm() while send() runs."""
        if _OWE_LOGOFF.get():
            self._logoffs[device.id] = session_id
            return
        try:
            await self._command(device, "logoff", session_id)
        except DriverError as exc:
            logger.debug("%s: logoff failed: %s", device.id, exc)

    async def _settle_logoff(self, device: Device) -> None:
        """Send the logoff send() owes for this device, if any (a failure is only logged)."""
        session_id = self._logoffs.pop(device.id, None)
        if session_id is not None:
            await self._log_off(device, session_id)  # never called with logoffs owed

    async def _switch(self, device: Device, pool: Pool, pools: tuple[PoolEntry, ...]) -> None:
        """Make ``pool`` the top-priority pool, adding it first when the miner lacks it."""
        entry = next((p for p in pools if same_url(p.url, pool.url)), None)
        if entry is None:
            escaped = [f.replace("\\", "\\\\").replace(",", "\\,") for f in (pool.url, pool.user)]
            password = pool.password.replace("\\", "\\\\").replace(",", "\\,")
            await self._command(device, "addpool", ",".join([*escaped, password]))
            listed = parse_pools(rows(await self._command(device, "pools"), "POOLS"))
            entry = next((p for p in listed if same_url(p.url, pool.url)), None)
            if entry is None:
                raise MalformedReply(device.id, f"addpool accepted but {pool.url} is not listed")
        await self._command(device, "switchpool", str(entry.index))

    async def _move(self, device: Device, workload: Workload, reading: MinerReading) -> None:
        """Send the commands that take the device from ``reading`` to ``workload``."""
        if workload.kind is WorkloadKind.SLEEP:
            if not reading.asleep:
                await self._curtail(device, "sleep")
            return
        pool = self._pools[workload.pool or ""]
        if reading.asleep:
            await self._curtail(device, "wakeup")
        current = current_pool_url(reading.pools)
        if current is None or not same_url(current, pool.url):
            await self._switch(device, pool, reading.pools)

    def _matches(self, requested: Workload, observed: Workload) -> bool:
        if requested.kind is not observed.kind:
            return False
        if requested.kind is not WorkloadKind.MINE:
            return True
        want = self._pools[requested.pool or ""].url
        got = self._pools[observed.pool].url if observed.pool in self._pools else observed.pool
        return same_url(want, got or "")

    def _refusal(self, device: Device, workload: Workload) -> str | None:
        if workload.kind in (WorkloadKind.OFF, WorkloadKind.AI):
            return (
                f"an ASIC on the cgminer API cannot do {workload.kind.value} (needs a PDU or queue)"
            )
        if workload.kind is WorkloadKind.MINE:
            if workload.pool not in self._pools:
                return f"unknown pool {workload.pool!r}"
            if workload.power_level != 1.0:
                return "power levels other than 1.0 are not supported by this driver"
        return None

    async def _confirm(self, device: Device, requested: Workload) -> Outcome:
        """Read back until the device reports ``requested`` or confirm_timeout_seconds pass."""
        deadline = self._clock() + self._options.confirm_timeout_seconds
        observed: Workload | None = None
        error: DriverError | None = None
        while True:
            try:
                observed, error = await self.observe(device), None
            except DriverError as exc:
                error = exc
            if observed is not None and error is None and self._matches(requested, observed):
                return Outcome(device.id, requested, OutcomeStatus.CONFIRMED, observed)
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            await self._sleep(min(self._options.confirm_interval_seconds, remaining))
        if observed is None:
            return self._failed(device, requested, error or Unavailable(device.id, "no reading"))
        detail = (
            f"device still reports {observed} after {self._options.confirm_timeout_seconds:g} s"
        )
        if error is not None:
            detail += f"; last read failed: {error.message}"
        return Outcome(device.id, requested, OutcomeStatus.UNCONFIRMED, observed, detail)

    def _failed(self, device: Device, requested: Workload, exc: DriverError) -> Outcome:
        status = (
            OutcomeStatus.REJECTED
            if isinstance(exc, Rejected | Fatal)
            else OutcomeStatus.UNAVAILABLE
        )
        return Outcome(device.id, requested, status, detail=f"{exc.reason}: {exc.message}")

    async def apply(self, device: Device, workload: Workload) -> Outcome:
        """Command the device to ``workload`` and confirm it by reading back; never raises."""
        outcome = await self.send(device, workload)
        return outcome if outcome is not None else await self.confirm(device, workload)

    async def confirm(self, device: Device, workload: Workload) -> Outcome:
        """Log off if send() owes it, then read back until the device shows ``workload``."""
        async with self._lock(device):
            await self._settle_logoff(device)
            return await self._confirm(device, workload)

    async def send(self, device: Device, workload: Workload) -> Outcome | None:
        """Send the commands for ``workload``: None once the device accepted them, else the outcome.

        A refusal, a rejection or a failure ends here.  A command that got no answer
        may have landed: the device is read back here (confirmed, unconfirmed or
        unavailable).  Commands go ahead of polls and read-backs for the client's
        sockets, so a fleet-wide curtail reaches every miner before it is verified.
        """
        refusal = self._refusal(device, workload)
        if refusal is not None:
            return Outcome(device.id, workload, OutcomeStatus.REJECTED, detail=refusal)
        async with self._lock(device):
            owing = _OWE_LOGOFF.set(True)
            try:
                outcome = await self._send(device, workload)
            finally:
                _OWE_LOGOFF.reset(owing)
            if outcome is not None:
                await self._settle_logoff(device)  # no confirm() follows
            return outcome

    async def _send(self, device: Device, workload: Workload) -> Outcome | None:
        """send() under the device's lock, with logoffs owed."""
        try:
            with self._client.ahead():
                if workload.kind is WorkloadKind.SLEEP:
                    await self._curtail(device, "sleep")  # idempotent; the read-back decides
                else:
                    await self._move(device, workload, await self._read(device))
        except Unavailable as exc:
            # No answer is not a no: the command may have landed.  Read back to know.
            logger.info("%s: %s got no answer: %s", device.id, workload, exc)
            try:
                await self.observe(device)
            except DriverError:
                return self._failed(device, workload, exc)  # reads fail too: unavailable
            outcome = await self._confirm(device, workload)
            if outcome.status is OutcomeStatus.UNCONFIRMED:
                detail = f"command got no answer ({exc.message}); {outcome.detail}"
                return dataclasses.replace(outcome, detail=detail)
            return outcome
        except DriverError as exc:
            logger.info("%s: %s failed: %s", device.id, workload, exc)
            return self._failed(device, workload, exc)
        return None

    async def sleep(self, device: Device) -> None:
        """Put the hashboards to sleep (LuxOS curtail sleep)."""
        async with self._lock(device):
            await self._curtail(device, "sleep")

    async def wake(self, device: Device) -> None:
        """Wake the hashboards (LuxOS curtail wakeup)."""
        async with self._lock(device):
            await self._curtail(device, "wakeup")

    async def switch_pool(self, device: Device, pool_url: str) -> None:
        """Make pool_url the active pool, adding it first if the miner lacks it."""
        pool = next((p for p in self._pools.values() if same_url(p.url, pool_url)), None)
        if pool is None:
            raise Fatal(device.id, f"{pool_url} is not a configured pool (no worker name for it)")
        async with self._lock(device):
            reply = await self._command(device, "pools")
            await self._switch(device, pool, parse_pools(rows(reply, "POOLS")))


PLUGINS = (
    AsicPlugin(
        tag="cgminer",
        options=CgminerOptions,
        factory=CgminerDriver,
        simulator="drivers.sim.miner:simulate",
        version_keys=("CGMiner",),
    ),
)
