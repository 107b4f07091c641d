"""Whatsminer personality, API v3: length-prefixed JSON on port 4433, a token per write.

Facts followed (apidoc.whatsminer.com as mirrored in the matroskin crate's
docs; framing and token steps in drivers/asic/whatsminer_crypto.py):

    read         ``get.miner.status`` param "summary+pools+edevs": summary.hash-realtime
                 (TH/s), power-realtime (W), chip-temp-max; pools[].url, status,
                 stratum-active; edevs (one row per board, deep health)
                 ``get.device.info`` without param (every section): miner.working
                 "true"|"false"; system.fwversion and error-code (deep health)
    salt         ``get.device.info`` param "salt" -> msg.salt (kept until a write is refused)
    sleep/wake   ``set.miner.service`` param "stop" / "start"
    power level  ``set.miner.power_percent`` param 0..100 (whole percent)
    reboot       ``set.system.reboot`` (no param)
    locate       ``set.system.led`` param [{color, period, duration, start}] (ms) or
                 "auto"; read back from ``get.device.info`` param "system" ->
                 system.ledstatus ("auto" unless set)
    replies      {"code": 0 | negative, "when", "msg", "desc"}

One connection per command (the miner would keep it open for 300 s; a
scheduler that talks to a miner once a tick does not need it).  Pool changes
need ``set.miner.pools`` with AES-encrypted parameters and are refused by this
driver.  Not confirmed from a primary source: the exact shape of
``set.miner.power_percent``'s param (sent as a bare integer here) and the codes
the firmware uses for a bad token (any refusal whose msg names the token gets
one retry with a fresh salt, then Fatal).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drivers.asic.cgminer import CgminerDriver, MinerReading
from drivers.asic.cgminer_client import decode_reply
from drivers.asic.cgminer_parse import PoolEntry, current_pool_url, parse_number
from drivers.asic.config import WhatsminerOptions
from drivers.asic.health_parse import whatsminer_v3_health
from drivers.asic.whatsminer_crypto import FRAME_HEADER, frame, v3_token
from drivers.asic.whatsminer_models import PowerLevels
from drivers.bounds import MAX_REPLY_BYTES
from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from scheduler.core.model import Device, Pool, Sample, Workload, WorkloadKind

Reply = dict[str, Any]
MAX_FRAME_BYTES = MAX_REPLY_BYTES
# The locate blink: red, on for 500 ms of every 1,000 ms (set.system.led steps are in ms).
LOCATE_BLINK = {"color": "red", "period": 1000, "duration": 500, "start": 0}


class V3Client:
    """Sends one framed JSON request per connection and returns the framed reply."""

    def __init__(self, *, timeout_seconds: float, concurrency: int | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self._slots = asyncio.BoundedSemaphore(concurrency) if concurrency else None

    async def call(self, address: str, port: int, request: Reply, *, source: str) -> Reply:
        """Run one command; Timeout, Unavailable, MalformedReply, or Rejected for code != 0."""
        if self._slots is None:
            body = await self._exchange(address, port, request, source)
        else:
            async with self._slots:
                body = await self._exchange(address, port, request, source)
        reply = decode_reply(body, source)
        code = reply.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise MalformedReply(source, f"{request['cmd']}: reply has no integer code")
        if code != 0:
            raise Rejected(source, f"{request['cmd']}: {reply.get('msg')} (code {code})")
        return reply

    async def _exchange(self, address: str, port: int, request: Reply, source: str) -> bytes:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout_seconds):
                reader, writer = await asyncio.open_connection(address, port)
                writer.write(frame(json.dumps(request).encode()))
                await writer.drain()
                while True:
                    (length,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
                    if length == 0:
                        continue  # heartbeat
                    if length > MAX_FRAME_BYTES:
                        raise MalformedReply(source, f"frame of {length} bytes is over the limit")
                    return await reader.readexactly(length)
        except TimeoutError as exc:
            raise Timeout(source, f"no complete reply within {self.timeout_seconds:g} s") from exc
        except asyncio.IncompleteReadError as exc:
            raise Unavailable(source, f"closed after {len(exc.partial)} bytes of a frame") from exc
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unavailable(source, f"cannot talk to {address}:{port}: {reason}") from exc
        finally:
            if writer is not None:
                writer.close()


class WhatsminerV3Driver(CgminerDriver):
    """Whatsminer API v3: sleep/wake through the mining service, power targets in percent."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: WhatsminerOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        v3: V3Client | None = None,
    ) -> None:
        super().__init__(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
        self._whatsminer = options
        self._wall_clock = wall_clock
        self.v3 = v3 or V3Client(timeout_seconds=options.timeout_seconds, concurrency=concurrency)
        self.levels = PowerLevels(options.power_tolerance)
        self._salts: dict[str, str] = {}

    async def get(self, device: Device, command: str, param: Any = None) -> Any:
        """Run a read command; its ``msg``."""
        request: Reply = {"cmd": command}
        if param is not None:
            request["param"] = param
        return (await self.v3.call(device.address, device.port, request, source=device.id))["msg"]

    async def _salt(self, device: Device) -> str:
        salt = self._salts.get(device.id)
        if salt is None:
            message = await self.get(device, "get.device.info", "salt")
            salt = message.get("salt") if isinstance(message, dict) else None
            if not isinstance(salt, str) or not salt:
                raise MalformedReply(device.id, f"get.device.info: no salt in {message!r}")
            self._salts[device.id] = salt
        return salt

    async def write(self, device: Device, command: str, param: Any) -> None:
        """Run a signed write; a token refusal fetches the salt again once, then is Fatal."""
        for attempt in (0, 1):
            ts = int(self._wall_clock())
            token, _ = v3_token(
                command, self._whatsminer.password.get_secret_value(), await self._salt(device), ts
            )
            request = {
                "cmd": command,
                "ts": ts,
                "token": token,
                "account": self._whatsminer.account,
                "param": param,
            }
            try:
                await self.v3.call(device.address, device.port, request, source=device.id)
            except Rejected as exc:
                if "token" not in exc.message.lower():
                    raise
                self._salts.pop(device.id, None)  # the salt changes when the miner restarts
                if attempt == 1:
                    raise Fatal(device.id, f"{exc.message} twice (check account/password)") from exc
            else:
                return

    async def _read(self, device: Device) -> MinerReading:
        status = await self.get(device, "get.miner.status", "summary+pools+edevs")
        info = await self.get(device, "get.device.info")
        summary = status.get("summary") if isinstance(status, dict) else None
        miner = info.get("miner") if isinstance(info, dict) else None
        if not isinstance(summary, dict) or not isinstance(miner, dict):
            raise MalformedReply(device.id, "get.miner.status/get.device.info: missing sections")
        hashrate_ths = parse_number(summary.get("hash-realtime"))
        power_w = parse_number(summary.get("power-realtime"))
        if hashrate_ths is None or power_w is None:
            raise MalformedReply(device.id, "summary lacks hash-realtime or power-realtime")
        pools = tuple(
            PoolEntry(
                index=position,
                url=str(row.get("url", "")),
                status=str(row.get("status", "")).capitalize(),
                priority=position,
                active=row.get("stratum-active") is True,
            )
            for position, row in enumerate(status.get("pools") or [])
            if isinstance(row, dict) and row.get("url")
        )
        asleep = str(miner.get("working")).lower() == "false"
        edevs = status.get("edevs")
        system = info.get("system")
        health = whatsminer_v3_health(
            summary,
            edevs if isinstance(edevs, list) else [],
            system if isinstance(system, dict) else None,
            info.get("error-code"),
        )
        return MinerReading(
            asleep=asleep,
            pool_url=None if asleep else current_pool_url(pools),
            pools=pools,
            power_w=power_w,
            hashrate_hs=hashrate_ths * 1e12,
            temperature_c=parse_number(summary.get("chip-temp-max")),
            observed_at=self._clock(),
            health=health,
        )

    async def collect(self, device: Device) -> Sample:
        """A fresh sample whose mining workload carries the power level read back."""
        sample = await super().collect(device)
        if sample.workload.kind is not WorkloadKind.MINE or sample.workload.pool is None:
            return sample
        level = self.levels.level(device, sample.power_w)
        return dataclasses.replace(sample, workload=self._shared_mine(sample.workload.pool, level))

    async def observe(self, device: Device) -> Workload:
        """The full read (status and service state)."""
        return (await self.collect(device)).workload

    def _refusal(self, device: Device, workload: Workload) -> str | None:
        if workload.kind is WorkloadKind.MINE and workload.pool in self._pools:
            return self.levels.range_refusal(device, workload)  # the model's level range
        return super()._refusal(device, workload)

    def _matches(self, requested: Workload, observed: Workload) -> bool:
        if not super()._matches(requested, observed):
            return False
        if requested.kind is not WorkloadKind.MINE:
            return True
        return abs(requested.power_level - observed.power_level) <= self.levels.tolerance

    async def _curtail(self, device: Device, action: str) -> None:
        await self.write(device, "set.miner.service", "stop" if action == "sleep" else "start")

    async def _switch(self, device: Device, pool: Pool, pools: tuple[PoolEntry, ...]) -> None:
        raise Rejected(device.id, f"pool changes over API v3 are not supported ({pool.name})")

    async def _move(self, device: Device, workload: Workload, reading: MinerReading) -> None:
        await super()._move(device, workload, reading)
        if workload.kind is not WorkloadKind.MINE:
            return
        if (
            not reading.asleep
            and self.levels.level(device, reading.power_w) == workload.power_level
        ):
            return
        await self.set_power_level(device, workload.power_level)

    async def reboot(self, device: Device) -> None:
        """``set.system.reboot`` (verified by the uptime starting again)."""
        await self.write(device, "set.system.reboot", None)

    async def set_locate(self, device: Device, on: bool) -> None:
        """``set.system.led``: red, blinking once a second, to locate; ``auto`` gives it back."""
        await self.write(device, "set.system.led", [LOCATE_BLINK] if on else "auto")

    async def locate_on(self, device: Device) -> bool:
        """``get.device.info`` ``system`` ``ledstatus``: manual while the locate LED is set."""
        info = await self.get(device, "get.device.info", "system")
        system = info.get("system") if isinstance(info, dict) else None
        state = system.get("ledstatus") if isinstance(system, dict) else None
        if not isinstance(state, str):
            raise MalformedReply(device.id, "get.device.info: no system ledstatus")
        return state.strip().lower() != "auto"

    async def set_power_level(self, device: Device, power_level: float) -> None:
        """set.miner.power_percent with the level as a whole percent."""
        await self.write(device, "set.miner.power_percent", round(power_level * 100))
        self.levels.remember(device, power_level)
