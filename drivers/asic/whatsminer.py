"""Whatsminer personality, API v2: cgminer-style reads on 4028, encrypted privileged writes.

Facts followed (WhatsMiner API V2.0.4/V2.0.5 documentation as published by
MicroBT resellers, and the public clients pyasic ``rpc/btminer.py`` and
satoshi-anonymoto/whatsminer-api; see drivers/asic/whatsminer_crypto.py for the
token, sign and AES steps):

    reads        ``summary+pools`` (cgminer shapes; SUMMARY has Power in W, MHS 5s,
                 Chip Temp Max) and ``status`` (Whatsminer shape: STATUS inline,
                 Msg {"btmineroff": "true"|"false"}; newer firmware says "mineroff")
    token        ``get_token`` -> Msg {time, salt, newsalt}, Code 134; a token lives 30
                 minutes and one client may hold 32 (Code 136 "token over max times")
    sleep/wake   ``power_off`` with respbefore "true" (answer first, then stop the
                 hashboards) and ``power_on``; both are slow to show in ``status``
    power level  ``set_power_pct`` with percent "0".."100" (a share of normal power;
                 levels above 1.0 are refused); read back as measured power / nominal.
                 ``adjust_power_limit`` is not used: the miner reboots to apply it
    pools        ``update_pools`` with pool1..3 / worker1..3 / passwd1..3
    codes        131 OK, 132 command error, 134 token OK, 135 check token error,
                 136 token over max times, 23 invalid JSON, 45 permission denied, 14
                 invalid command

Errors: a token the miner refuses (135/136) is replaced once; a second refusal,
or a request the miner cannot decrypt (23: the key came from a wrong admin
password), raises Fatal; 45 (writes not enabled with WhatsMinerTool) and other
E replies raise Rejected.  Every write is confirmed by reading back (CgminerDriver).

Not confirmed from a primary source: whether set_power_pct's percent is a share
of normal power or of the present power ("based on current power" in the
documentation); this driver reads it as a share of normal power and confirms by
measured power, so a miner that reads it the other way shows up as unconfirmed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drivers.asic.cgminer import CgminerClient, CgminerDriver, MinerReading
from drivers.asic.cgminer_client import Reply, raise_for_status
from drivers.asic.cgminer_parse import (
    PoolEntry,
    current_pool_url,
    parse_hashrate_hs,
    parse_number,
    parse_pools,
    parse_power_w,
    rows,
    section,
)
from drivers.asic.config import WhatsminerOptions
from drivers.asic.health_parse import whatsminer_health
from drivers.asic.registry import AsicDriver, AsicPlugin
from drivers.asic.whatsminer_crypto import V2Token, v2_decrypt, v2_encrypt, v2_token
from drivers.asic.whatsminer_models import PowerLevels
from drivers.asic.whatsminer_v3 import WhatsminerV3Driver
from drivers.bounds import json_problem
from drivers.errors import DriverError, Fatal, MalformedReply, Rejected
from scheduler.core.model import Device, Pool, Sample, Workload, WorkloadKind

CODE_INVALID_JSON, CODE_PERMISSION_DENIED = 23, 45
CODE_TOKEN_INVALID, CODE_TOKEN_LIMIT = 135, 136


def mining_off(device_id: str, status: Mapping[str, Any]) -> bool:
    """True when ``status`` says btminer is off (``btmineroff`` or newer ``mineroff``)."""
    message = status.get("Msg")
    value = None
    if isinstance(message, dict):
        value = message.get("btmineroff", message.get("mineroff"))
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise MalformedReply(device_id, f"status: no btmineroff/mineroff in {message!r}")


class WhatsminerDriver(CgminerDriver):
    """Whatsminer API v2: reads in plain text, sleep/wake/power/pools as encrypted writes."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: WhatsminerOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CgminerClient | None = None,
    ) -> None:
        super().__init__(
            pools, options, concurrency=concurrency, clock=clock, sleep=sleep, client=client
        )
        self._whatsminer = options
        self.levels = PowerLevels(options.power_tolerance)
        self._tokens: dict[str, tuple[V2Token, float]] = {}

    # ---- privileged commands ------------------------------------------------------------

    async def _token(self, device: Device, *, fresh: bool) -> V2Token:
        kept = self._tokens.get(device.id)
        if (
            not fresh
            and kept is not None
            and self._clock() - kept[1] < self._whatsminer.token_reuse_seconds
        ):
            return kept[0]
        message = (await self._command(device, "get_token")).get("Msg")
        fields = [message.get(k) if isinstance(message, dict) else None for k in _TOKEN_FIELDS]
        if not all(isinstance(f, str) and f for f in fields):
            raise MalformedReply(device.id, f"get_token: no time/salt/newsalt in {message!r}")
        token = v2_token(self._whatsminer.password.get_secret_value(), *(str(f) for f in fields))
        self._tokens[device.id] = (token, self._clock())
        return token

    async def privileged(self, device: Device, command: str, **parameters: str) -> Reply:
        """Run one encrypted write; a refused token is replaced once, then the refusal raises."""
        reply: Reply = {}
        for attempt in (0, 1):
            token = await self._token(device, fresh=attempt == 1)
            plain = json.dumps({"cmd": command, "token": token.sign, **parameters})
            envelope = {"enc": 1, "data": v2_encrypt(token.aes_key, plain)}
            reply = await self._client.send(
                device.address, device.port, json.dumps(envelope).encode(), source=device.id
            )
            if "enc" in reply:
                reply = self._decrypt(device, command, token, reply["enc"])
            if reply.get("STATUS") in ("E", "F") and reply.get("Code") in (
                CODE_TOKEN_INVALID,
                CODE_TOKEN_LIMIT,
            ):
                self._tokens.pop(device.id, None)
                if attempt == 0:
                    continue
                raise Fatal(device.id, f"{command}: token refused twice (check the password)")
            break
        if reply.get("STATUS") in ("E", "F") and reply.get("Code") == CODE_INVALID_JSON:
            self._tokens.pop(device.id, None)
            raise Fatal(device.id, f"{command}: the miner cannot decrypt it (wrong password?)")
        if reply.get("STATUS") in ("E", "F") and reply.get("Code") == CODE_PERMISSION_DENIED:
            raise Rejected(device.id, f"{command}: permission denied (API writes not enabled)")
        if reply.get("STATUS") not in ("S", "I", "W"):
            raise_for_status(reply, device.id, command)
            raise MalformedReply(device.id, f"{command}: reply has no STATUS: {reply!r}")
        return reply

    def _decrypt(self, device: Device, command: str, token: V2Token, encoded: Any) -> Reply:
        if not isinstance(encoded, str):
            raise MalformedReply(device.id, f"{command}: enc is {type(encoded).__name__}")
        try:
            plain = v2_decrypt(token.aes_key, encoded)
            problem = json_problem(plain.encode())
            if problem is not None:
                raise MalformedReply(device.id, f"{command}: decrypted reply {problem}")
            value = json.loads(plain)
        except (ValueError, RecursionError) as exc:
            raise MalformedReply(device.id, f"{command}: reply does not decrypt: {exc}") from None
        if not isinstance(value, dict):
            raise MalformedReply(device.id, f"{command}: decrypted reply is not an object")
        return value

    # ---- reads --------------------------------------------------------------------------

    async def _report(self, device: Device) -> tuple[Reply, Reply, Reply | None]:
        try:
            joined = await self._command(device, "summary+pools+devs")
        except Rejected:  # firmware without joined commands
            alone = await self._command(device, "summary")
            return alone, await self._command(device, "pools"), None
        summary, pools = section(joined, "summary"), section(joined, "pools")
        if summary is None or pools is None:
            raise MalformedReply(device.id, "summary+pools: a section is missing")
        raise_for_status(summary, device.id, "summary")
        raise_for_status(pools, device.id, "pools")
        return summary, pools, section(joined, "devs")

    async def _error_codes(self, device: Device, summary: Mapping[str, Any]) -> list[str]:
        """The codes ``get_error_code`` lists, asked only when SUMMARY counts some."""
        if not parse_number(summary.get("Error Code Count")):
            return []
        try:
            reply = await self._command(device, "get_error_code")
        except DriverError:
            return ["unreadable (get_error_code failed)"]
        message = reply.get("Msg")
        listed = message.get("error_code") if isinstance(message, dict) else None
        codes: list[str] = []
        for item in listed if isinstance(listed, list) else []:
            codes += [str(k) for k in item] if isinstance(item, dict) else [str(item)]
        return codes

    async def _read(self, device: Device) -> MinerReading:
        summary_reply, pools_reply, devs_reply = await self._report(device)
        asleep = mining_off(device.id, await self._command(device, "status"))
        summary_rows = rows(summary_reply, "SUMMARY")
        if not summary_rows:
            raise MalformedReply(device.id, "summary has no SUMMARY row")
        summary = summary_rows[0]
        hashrate_hs = parse_hashrate_hs(summary)
        # Power_RT is the PSU's real-time reading; Power the firmware's average (older firmware
        # has only Power).
        power_w = parse_number(summary.get("Power_RT")) or parse_power_w(summary, [], [])
        if hashrate_hs is None or power_w is None:
            raise MalformedReply(device.id, "SUMMARY lacks MHS or Power")
        temperature = parse_number(summary.get("Chip Temp Max", summary.get("Temperature")))
        pools = parse_pools(rows(pools_reply, "POOLS"))
        health = whatsminer_health(
            summary, rows(devs_reply, "DEVS"), await self._error_codes(device, summary)
        )
        return MinerReading(
            asleep=asleep,
            pool_url=None if asleep else current_pool_url(pools),
            pools=pools,
            power_w=power_w,
            hashrate_hs=hashrate_hs,
            temperature_c=temperature,
            observed_at=self._clock(),
            health=health,
        )

    async def collect(self, device: Device) -> Sample:
        """A fresh sample whose mining workload carries the power level read back."""
        sample = await super().collect(device)
        if sample.workload.kind is not WorkloadKind.MINE or sample.workload.pool is None:
            return sample
        level = self.levels.level(device, sample.power_w)
        return Sample(
            device_id=sample.device_id,
            observed_at=sample.observed_at,
            workload=self._shared_mine(sample.workload.pool, level),
            power_w=sample.power_w,
            hashrate_hs=sample.hashrate_hs,
            temperature_c=sample.temperature_c,
            pool_url=sample.pool_url,
            health=sample.health,
        )

    async def observe(self, device: Device) -> Workload:
        """Mode, pool and power level all need the full read on Whatsminer."""
        return (await self.collect(device)).workload

    # ---- writes -------------------------------------------------------------------------

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
        if action == "sleep":
            await self.privileged(device, "power_off", respbefore="true")
        else:
            await self.privileged(device, "power_on")

    async def _switch(self, device: Device, pool: Pool, pools: tuple[PoolEntry, ...]) -> None:
        """update_pools with ``pool`` first and the device's other pools after (three at most)."""
        others = [self._pools[n] for n in device.pools if n in self._pools and n != pool.name]
        ordered = [pool, *others][:3]
        parameters: dict[str, str] = {}
        for number in range(1, 4):
            entry = ordered[number - 1] if number <= len(ordered) else None
            parameters[f"pool{number}"] = entry.url if entry else ""
            parameters[f"worker{number}"] = entry.user if entry else ""
            parameters[f"passwd{number}"] = entry.password if entry else ""
        await self.privileged(device, "update_pools", **parameters)

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
        """The encrypted ``reboot`` (verified by the uptime starting again)."""
        await self.privileged(device, "reboot")

    async def set_locate(self, device: Device, on: bool) -> None:
        """``set_led`` (red, blinking) to locate; ``reset_led`` gives the LED back to the firmware."""
        if on:
            await self.privileged(
                device, "set_led", color="red", period="1000", duration="500", start="0"
            )
        else:
            await self.privileged(device, "reset_led")

    async def locate_on(self, device: Device) -> bool:
        """``get_miner_info`` ``ledstat``: manual while the locate LED is set."""
        reply = await self._command(device, "get_miner_info", "ledstat")
        message = reply.get("Msg")
        state = message.get("ledstat") if isinstance(message, dict) else None
        if not isinstance(state, str):
            raise MalformedReply(device.id, "get_miner_info: no ledstat")
        return state.strip().lower() != "auto"

    async def set_power_level(self, device: Device, power_level: float) -> None:
        """Send set_power_pct with the level as a whole percent of normal power."""
        await self.privileged(device, "set_power_pct", percent=str(round(power_level * 100)))
        self.levels.remember(device, power_level)


_TOKEN_FIELDS = ("time", "salt", "newsalt")


def create_whatsminer_driver(
    pools: Mapping[str, Pool],
    options: WhatsminerOptions,
    *,
    concurrency: int,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> AsicDriver:
    """API v2 on 4028 or API v3 on 4433, as ``api_version`` says."""
    if options.api_version == 3:
        return WhatsminerV3Driver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
    return WhatsminerDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)


PLUGINS = (
    AsicPlugin(
        tag="whatsminer",
        options=WhatsminerOptions,
        factory=create_whatsminer_driver,
        simulator="drivers.sim.whatsminer:simulate",
    ),
)
