"""VNish personality: telemetry over the cgminer API, state and sleep over VNish's web API.

VNish (aftermarket firmware for Antminers) answers the cgminer API on port 4028
but not ``version`` (an invalid command); it names itself in ``stats``
(STATS[0] ``Type`` ``Antminer S21 Pro (Vnish 1.2.7)``).  What this driver reads:

    hash rate    SUMMARY[0] ``GHS 5s`` (GH/s)
    power        the sum of STATS ``chain_consumptionN`` (W per hashboard): VNish reports
                 no total on this API, and no ``Power`` field
    temperature  the hottest ``temp_chipN`` sensor
    pools        POOLS, without VNish's own ``DevFee`` entry (its fee pool)
    asleep       the web API's ``/api/v1/status`` ``miner_state`` (``stopped``, ``paused``,
                 ``shutting-down`` ... are not mining)

Sleep and wake go through the web API on ``web_port``: ``POST /api/v1/unlock`` with
the web password returns a token, sent as ``Authorization`` on ``POST
/api/v1/mining/stop`` (sleep) and ``/api/v1/mining/start`` (wake).  A power level is the workload's ``power_level`` times
the device's nominal power: the *tuned* preset of ``/api/v1/autotune/presets`` (named
by their watts) nearest it is set with ``POST /api/v1/settings``
``{"miner": {"overclock": {"preset": "<W>"}}}``, as LuxOS picks the nearest profile.  apply() then reads back (``miner_state``, the pools, and the measured power
over the nominal, snapped to the target within ``power_tolerance``) until the device
shows the workload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from drivers.asic.cgminer import CgminerClient, CgminerDriver, MinerReading
from drivers.asic.cgminer_parse import parse_number
from drivers.asic.config import CgminerFamilyOptions
from drivers.asic.registry import AsicPlugin
from drivers.bounds import MAX_REPLY_BYTES, json_problem
from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from scheduler.core.model import Device, Pool, Sample, Workload, WorkloadKind

MAX_POWER_LEVEL = 1.5
NOT_MINING = frozenset({"stopped", "paused", "shutting-down", "stopping", "failure"})


class VnishOptions(CgminerFamilyOptions):
    """VNish: cgminer API for telemetry, web API (token from the web password) for state."""

    driver: Literal["vnish"] = "vnish"
    web_port: int = Field(80, ge=1, le=65535, description="port of the miner's web API")
    web_password: SecretStr = Field(SecretStr("admin"), description="VNish web password")
    confirm_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="stop and start take seconds to show"
    )
    power_tolerance: float = Field(
        0.08,
        gt=0,
        lt=0.5,
        description="measured power within this share of the target confirms a power level",
    )


class VnishWebClient:
    """The web API calls this driver makes, errors mapped to DriverError; one token per miner."""

    def __init__(self, options: VnishOptions, http: httpx.AsyncClient | None = None) -> None:
        self._options = options
        self._http = http or httpx.AsyncClient(timeout=options.timeout_seconds)
        self._tokens: dict[str, str] = {}

    async def _request(
        self, device: Device, method: str, command: str, body: Any = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """Status and body (at most MAX_REPLY_BYTES: MalformedReply beyond, the rest unread)."""
        url = f"http://{device.address}:{self._options.web_port}/api/v1/{command}"
        headers = {"Authorization": token} if token else {}
        try:
            async with self._http.stream(method, url, json=body, headers=headers) as response:
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > MAX_REPLY_BYTES:
                        raise MalformedReply(
                            device.id, f"{command}: reply over {MAX_REPLY_BYTES} bytes"
                        )
                return response.status_code, bytes(content)
        except httpx.TimeoutException as exc:
            raise Timeout(
                device.id, f"{command}: no reply in {self._options.timeout_seconds:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(device.id, f"{command}: {exc}") from exc

    @staticmethod
    def _json(device: Device, command: str, reply: tuple[int, bytes]) -> Any:
        status, content = reply
        if status != 200:
            raise Rejected(device.id, f"{command}: HTTP {status}")
        problem = json_problem(content)
        if problem is not None:
            raise MalformedReply(device.id, f"{command}: reply {problem}")
        try:
            return json.loads(content)
        except ValueError as exc:
            raise MalformedReply(device.id, f"{command}: reply is not JSON") from exc

    async def _token(self, device: Device) -> str:
        token = self._tokens.get(device.id)
        if token is not None:
            return token
        password = self._options.web_password.get_secret_value()
        response = await self._request(device, "POST", "unlock", {"pw": password})
        if response[0] in (401, 403):
            raise Fatal(device.id, "unlock: web password refused (check web_password)")
        reply = self._json(device, "unlock", response)
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedReply(device.id, "unlock: no token in the reply")
        self._tokens[device.id] = token
        return token

    async def status(self, device: Device) -> dict[str, Any]:
        """GET /api/v1/status (a JSON object)."""
        reply = self._json(device, "status", await self._request(device, "GET", "status"))
        if not isinstance(reply, dict):
            raise MalformedReply(device.id, "status: not a JSON object")
        return reply

    async def _authorized(self, device: Device, method: str, command: str, body: Any) -> bytes:
        """A request with the token (unlocking again once when it expired); the body."""
        status, content = await self._request(
            device, method, command, body, await self._token(device)
        )
        if status == 401:
            self._tokens.pop(device.id, None)
            token = await self._token(device)
            status, content = await self._request(device, method, command, body, token)
        if status != 200:
            raise Rejected(device.id, f"{command}: HTTP {status}")
        return content

    async def post(self, device: Device, command: str, body: Any = None) -> None:
        """POST /api/v1/<command>; the reply's status decides (its body is often empty)."""
        await self._authorized(device, "POST", command, {} if body is None else body)

    async def presets(self, device: Device) -> list[tuple[str, float]]:
        """The tuned power presets (name, W) from /api/v1/autotune/presets, lowest first."""
        content = await self._authorized(device, "GET", "autotune/presets", None)
        reply = self._json(device, "autotune/presets", (200, content))
        if isinstance(reply, dict):
            reply = reply.get("presets", [])
        found = []
        for preset in reply if isinstance(reply, list) else []:
            if not isinstance(preset, dict) or preset.get("status") != "tuned":
                continue
            name = preset.get("name")
            watts = parse_number(name)
            if isinstance(name, str) and watts is not None and watts > 0:
                found.append((name, watts))
        return sorted(found, key=lambda item: item[1])


def preset_for(presets: list[tuple[str, float]], watts: float) -> str | None:
    """The preset nearest ``watts`` (the lower on a tie), as LuxOS picks a profile; None if none."""
    if not presets:
        return None
    return min(presets, key=lambda item: (abs(item[1] - watts), item[1]))[0]


def mining_state(device: Device, status: Mapping[str, Any]) -> str:
    """``miner_state`` from /api/v1/status; MalformedReply when missing."""
    state = status.get("miner_state")
    if not isinstance(state, str) or not state:
        raise MalformedReply(device.id, f"status: no miner_state ({state!r})")
    return state.strip().lower()


class VnishDriver(CgminerDriver):
    """VNish: cgminer API reads, power from the chains, web-API sleep/wake and state."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: VnishOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CgminerClient | None = None,
        web: VnishWebClient | None = None,
    ) -> None:
        super().__init__(
            pools, options, concurrency=concurrency, clock=clock, sleep=sleep, client=client
        )
        self.web = web or VnishWebClient(options)
        self._tolerance = options.power_tolerance
        self._targets: dict[str, float] = {}  # device id -> power level last set

    def power_level(self, device: Device, power_w: float) -> float:
        """The power level a measured power shows (the target when within tolerance)."""
        measured = power_w / device.nominal_power_w
        target = self._targets.get(device.id, 1.0)
        if abs(measured - target) <= self._tolerance:
            return target
        return min(MAX_POWER_LEVEL, max(0.01, round(measured, 2)))

    async def _read(self, device: Device) -> MinerReading:
        reading = await super()._read(device)
        if mining_state(device, await self.web.status(device)) not in NOT_MINING:
            return reading
        return MinerReading(
            asleep=True,
            pool_url=None,
            pools=reading.pools,
            power_w=reading.power_w,
            hashrate_hs=reading.hashrate_hs,
            temperature_c=reading.temperature_c,
            observed_at=reading.observed_at,
            health=reading.health,
        )

    async def collect(self, device: Device) -> Sample:
        """A fresh sample whose mining workload carries the power level read back."""
        sample = await super().collect(device)
        if sample.workload.kind is not WorkloadKind.MINE or sample.workload.pool is None:
            return sample
        level = self.power_level(device, sample.power_w)
        return dataclasses.replace(sample, workload=Workload.mine(sample.workload.pool, level))

    async def reboot(self, device: Device) -> None:
        """POST /api/v1/system/reboot (verified by the uptime starting again)."""
        await self.web.post(device, "system/reboot")

    async def locate_on(self, device: Device) -> bool:
        """``find_miner`` of /api/v1/status."""
        return bool((await self.web.status(device)).get("find_miner"))

    async def set_locate(self, device: Device, on: bool) -> None:
        """POST /api/v1/find-miner toggles the LED: sent only when it is not as wanted."""
        if await self.locate_on(device) != on:
            await self.web.post(device, "find-miner")

    async def observe(self, device: Device) -> Workload:
        """The state from the web API, the pool and the power from the cgminer API."""
        return (await self.collect(device)).workload

    def _refusal(self, device: Device, workload: Workload) -> str | None:
        if workload.kind is WorkloadKind.MINE and workload.pool in self._pools:
            return None  # any power level: VNish's tuned presets
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
        """Select the tuned preset nearest the target power (``POST settings``)."""
        watts = power_level * device.nominal_power_w
        name = preset_for(await self.web.presets(device), watts)
        if name is None:
            raise Rejected(device.id, "autotune/presets: no tuned preset to set a power level")
        await self.web.post(device, "settings", {"miner": {"overclock": {"preset": name}}})
        self._targets[device.id] = power_level

    async def _curtail(self, device: Device, action: str) -> None:
        await self.web.post(device, "mining/stop" if action == "sleep" else "mining/start")


PLUGINS = (
    AsicPlugin(
        tag="vnish",
        options=VnishOptions,
        factory=VnishDriver,
        simulator="drivers.sim.vnish:simulate",
    ),
)
