"""Async client and driver for the cgminer-family API (bmminer, Whatsminer, LuxOS).

Protocol: one TCP connection per command; the client writes
``{"command": ..., "parameter": ...}`` and the miner answers one JSON document,
usually NUL-terminated, then closes.  Report commands are joined with ``+``
so a single connection reads all telemetry; the reply is keyed by command name,
each value the command's own reply wrapped in a one-element list.

Where each Sample field comes from:

    hash rate    SUMMARY[0] "MHS 5s", "GHS 5s", "MHS av" or "GHS av" (first present; to H/s)
    power        POWER[0] "Watts" (LuxOS), else SUMMARY[0] "Power" (Whatsminer), else a
                 "Power" in STATS; no reading at all is a MalformedReply, never a guess
    temperature  the hottest chip sensor: STATS "temp_chipN" ("60-58-73-74" strings or
                 numbers), else bmminer's "temp2_N"; None when the firmware reports none
    pool         the POOLS entry with "Stratum Active", else the best-priority live one
    asleep       CONFIG[0] "CurtailMode" == "Sleep" (LuxOS); firmware without the field
                 is read as awake

Sleep and wake follow LuxOS: ``logon`` returns SESSION[0].SessionID, then
``curtail`` with ``<session>,sleep`` or ``<session>,wakeup``, then ``logoff``.
Pool moves use cgminer's ``addpool`` and ``switchpool`` (which also enables the pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from drivers.asic.config import CgminerOptions
from drivers.errors import DriverError, Fatal, MalformedReply, Rejected, Timeout, Unavailable
from scheduler.model import Device, Outcome, OutcomeStatus, Pool, Sample, Workload, WorkloadKind

logger = logging.getLogger(__name__)

Reply = dict[str, Any]

MAX_REPLY_BYTES = 1024 * 1024
TELEMETRY_COMMANDS = ("summary", "pools", "stats", "config", "power")
REQUIRED_SECTIONS = frozenset({"summary", "pools"})
HASHRATE_FIELDS = (("MHS 5s", 1e6), ("GHS 5s", 1e9), ("MHS av", 1e6), ("GHS av", 1e9))


# ---- client ---------------------------------------------------------------------------------


def decode_reply(raw: bytes, source: str) -> Reply:
    """Decode one reply (NUL already stripped) into a JSON object or raise MalformedReply."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        try:  # some bmminer builds omit the comma between STATS objects: "}{"
            value = json.loads(text.replace("}{", "},{"))
        except json.JSONDecodeError:
            raise MalformedReply(source, f"reply is not JSON ({exc.msg} at {exc.pos})") from exc
    if not isinstance(value, dict):
        raise MalformedReply(source, f"reply is a JSON {type(value).__name__}, not an object")
    return value


def status_entry(reply: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return the STATUS block of a reply (a list in cgminer, inline in Whatsminer)."""
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], dict):
        return status[0]
    if isinstance(status, str):
        return reply
    return None


def raise_for_status(reply: Mapping[str, Any], source: str, command: str) -> None:
    """Raise Rejected when the reply's STATUS is E (error) or F (fatal)."""
    entry = status_entry(reply)
    if entry is not None and entry.get("STATUS") in ("E", "F"):
        message = entry.get("Msg", "error")
        raise Rejected(source, f"{command}: {message} (code {entry.get('Code')})")


class CgminerClient:
    """Sends one command per TCP connection and decodes the (NUL-terminated) JSON reply."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 3.0,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        concurrency: int | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_reply_bytes = max_reply_bytes
        self._slots = asyncio.BoundedSemaphore(concurrency) if concurrency else None

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
        else:
            async with self._slots:
                yield

    async def command(
        self,
        address: str,
        port: int,
        command: str,
        parameter: str | None = None,
        *,
        source: str | None = None,
    ) -> Reply:
        """Run one command; raise Timeout, Unavailable, MalformedReply or Rejected on failure."""
        source = source or f"{address}:{port}"
        request: Reply = {"command": command}
        if parameter is not None:
            request["parameter"] = parameter
        async with self._slot():
            raw = await self._exchange(address, port, json.dumps(request).encode(), source)
        reply = decode_reply(raw, source)
        if "+" not in command and status_entry(reply) is None:
            raise MalformedReply(source, f"{command}: reply has no STATUS")
        raise_for_status(reply, source, command)
        return reply

    async def _exchange(self, address: str, port: int, payload: bytes, source: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_seconds):
                reader, writer = await asyncio.open_connection(address, port)
                try:
                    writer.write(payload)
                    await writer.drain()
                    return await self._read_reply(reader, source)
                finally:
                    writer.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.wait_closed()
        except TimeoutError as exc:
            raise Timeout(source, f"no complete reply within {self.timeout_seconds:g} s") from exc
        except OSError as exc:  # refused, reset, unreachable
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unavailable(source, f"cannot talk to {address}:{port}: {reason}") from exc

    async def _read_reply(self, reader: asyncio.StreamReader, source: str) -> bytes:
        buffer = bytearray()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            end = chunk.find(b"\x00")
            buffer += chunk if end < 0 else chunk[:end]
            if len(buffer) > self.max_reply_bytes:
                raise MalformedReply(source, f"reply larger than {self.max_reply_bytes} bytes")
            if end >= 0:
                if not buffer:
                    raise MalformedReply(source, "empty reply")
                return bytes(buffer)
        if not buffer:
            raise Unavailable(source, "closed without replying")
        return bytes(buffer)


# ---- parsing --------------------------------------------------------------------------------


def section(reply: Mapping[str, Any], name: str) -> Reply | None:
    """Return one command's reply from a joined reply (unwrapping cgminer's one-element list)."""
    value = reply.get(name)
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, dict) else None


def rows(reply: Mapping[str, Any] | None, key: str) -> list[Reply]:
    """Return the dict rows under ``key`` (SUMMARY, POOLS, STATS, ...), [] when absent."""
    value = reply.get(key) if reply is not None else None
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    """Return a finite number from an int, float or numeric string ("13,623.31" too); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.replace(",", "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_hashrate_hs(summary: Mapping[str, Any]) -> float | None:
    """Return the hash rate in H/s from a SUMMARY row (MHS or GHS fields)."""
    for field, scale in HASHRATE_FIELDS:
        value = _number(summary.get(field))
        if value is not None:
            return value * scale
    return None


def parse_power_w(
    summary: Mapping[str, Any], stats: list[Reply], power: list[Reply]
) -> float | None:
    """Return input power in W from POWER Watts, SUMMARY Power or a STATS Power."""
    candidates = [row.get("Watts") for row in power[:1]] + [summary.get("Power")]
    candidates += [row.get("Power") for row in stats]
    for candidate in candidates:
        value = _number(candidate)
        if value is not None and value >= 0:
            return value
    return None


def parse_chip_temperature_c(stats: list[Reply]) -> float | None:
    """Return the hottest chip sensor in Celsius from STATS rows, ignoring 0 and NaN."""
    for prefix in ("temp_chip", "temp2_"):
        readings: list[float] = []
        for row in stats:
            for key, value in row.items():
                if not key.startswith(prefix) or not key[len(prefix) :].isdigit():
                    continue
                parts = value.split("-") if isinstance(value, str) else [value]
                readings += [v for v in map(_number, parts) if v is not None and v > 0]
        if readings:
            return max(readings)
    return None


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One row of the miner's pool list."""

    index: int
    url: str
    status: str
    priority: int
    active: bool


def parse_pools(pool_rows: list[Reply]) -> tuple[PoolEntry, ...]:
    """Return the POOLS rows that carry a URL."""
    entries = []
    for position, row in enumerate(pool_rows):
        url = row.get("URL")
        if not isinstance(url, str) or not url:
            continue
        index = _number(row.get("POOL"))
        priority = _number(row.get("Priority"))
        active = row.get("Stratum Active")
        entries.append(
            PoolEntry(
                index=int(index) if index is not None else position,
                url=url,
                status=str(row.get("Status", "")),
                priority=int(priority) if priority is not None else position,
                active=active is True or str(active).lower() in ("true", "y", "yes"),
            )
        )
    return tuple(entries)


def current_pool_url(pools: tuple[PoolEntry, ...]) -> str | None:
    """Return the pool hashing now: Stratum Active, else the best-priority enabled (live first)."""
    active = [p for p in pools if p.active]
    enabled = [p for p in pools if p.status != "Disabled"]
    ranked = sorted(active or enabled, key=lambda p: (p.status != "Alive", p.priority))
    return ranked[0].url if ranked else None


def parse_curtailed(config_rows: list[Reply]) -> bool:
    """Return True when CONFIG says the hashboards are curtailed to sleep (LuxOS)."""
    mode = config_rows[0].get("CurtailMode") if config_rows else None
    return isinstance(mode, str) and mode.strip().lower() == "sleep"


def same_url(a: str, b: str) -> bool:
    """Compare pool URLs ignoring case, outer space, a trailing slash and a missing scheme."""

    def parts(url: str) -> tuple[str, str]:
        scheme, sep, rest = url.strip().lower().rstrip("/").rpartition("://")
        return (scheme if sep else "", rest)

    (scheme_a, rest_a), (scheme_b, rest_b) = parts(a), parts(b)
    return rest_a == rest_b and (scheme_a == scheme_b or not scheme_a or not scheme_b)


# ---- driver ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Reading:
    asleep: bool
    pool_url: str | None
    pools: tuple[PoolEntry, ...]
    power_w: float
    hashrate_hs: float
    temperature_c: float | None
    observed_at: float


class CgminerDriver:
    """Reads and commands cgminer-family miners; apply() confirms by reading back."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: CgminerOptions,
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

    def _lock(self, device: Device) -> asyncio.Lock:
        return self._locks.setdefault(device.id, asyncio.Lock())

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

    async def _read(self, device: Device) -> _Reading:
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
            raise MalformedReply(device.id, "no power reading (POWER Watts, SUMMARY Power)")
        pools = parse_pools(rows(sections["pools"], "POOLS"))
        asleep = parse_curtailed(rows(sections["config"], "CONFIG"))
        return _Reading(
            asleep=asleep,
            pool_url=None if asleep else current_pool_url(pools),
            pools=pools,
            power_w=power_w,
            hashrate_hs=hashrate_hs,
            temperature_c=parse_chip_temperature_c(stats),
            observed_at=self._clock(),
        )

    def _pool_name(self, device: Device, url: str) -> str:
        """Return the configured pool name for a URL (device's own pools first), else the URL."""
        names = [*device.pools, *self._pools]
        return next(
            (n for n in names if n in self._pools and same_url(self._pools[n].url, url)), url
        )

    async def collect(self, device: Device) -> Sample:
        """Return a fresh sample of the device; raise a DriverError when it cannot be read."""
        reading = await self._read(device)
        if reading.asleep:
            workload = Workload.sleep()
        elif reading.pool_url is None:
            raise MalformedReply(device.id, "awake but no pool is configured on the miner")
        else:
            workload = Workload.mine(self._pool_name(device, reading.pool_url))
        return Sample(
            device_id=device.id,
            observed_at=reading.observed_at,
            workload=workload,
            power_w=reading.power_w,
            hashrate_hs=reading.hashrate_hs,
            temperature_c=reading.temperature_c,
            pool_url=reading.pool_url,
        )

    async def _curtail(self, device: Device, action: str) -> None:
        """Run curtail <session>,<action> in a LuxOS session (taking over one left open)."""
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
        try:
            await self._command(device, "curtail", f"{session_id},{action}")
        finally:
            if owned:
                try:
                    await self._command(device, "logoff", session_id)
                except DriverError as exc:
                    logger.debug("%s: logoff failed: %s", device.id, exc)

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

    async def _move(self, device: Device, workload: Workload, reading: _Reading) -> None:
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

    def _refusal(self, workload: Workload) -> str | None:
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
                observed, error = (await self.collect(device)).workload, None
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
        refusal = self._refusal(workload)
        if refusal is not None:
            return Outcome(device.id, workload, OutcomeStatus.REJECTED, detail=refusal)
        async with self._lock(device):
            try:
                await self._move(device, workload, await self._read(device))
            except DriverError as exc:
                logger.info("%s: %s failed: %s", device.id, workload, exc)
                return self._failed(device, workload, exc)
            return await self._confirm(device, workload)

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
