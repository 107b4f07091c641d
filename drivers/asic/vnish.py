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
/api/v1/mining/stop`` (sleep) and ``/api/v1/mining/start`` (wake).  apply() then
reads back (``miner_state`` and the pools) until the device shows the workload.
Power levels other than 1.0 are refused (VNish's power presets are not driven here).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from drivers.asic.cgminer import CgminerClient, CgminerDriver, MinerReading
from drivers.asic.config import CgminerFamilyOptions
from drivers.asic.registry import AsicPlugin
from drivers.bounds import MAX_REPLY_BYTES, json_problem
from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from scheduler.core.model import Device, Pool, Workload

NOT_MINING = frozenset({"stopped", "paused", "shutting-down", "stopping", "failure"})


class VnishOptions(CgminerFamilyOptions):
    """VNish: cgminer API for telemetry, web API (token from the web password) for state."""

    driver: Literal["vnish"] = "vnish"
    web_port: int = Field(80, ge=1, le=65535, description="port of the miner's web API")
    web_password: SecretStr = Field(SecretStr("admin"), description="VNish web password")
    confirm_timeout_seconds: float = Field(
        60.0, gt=0, le=600, description="stop and start take seconds to show"
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

    async def post(self, device: Device, command: str) -> None:
        """POST /api/v1/<command> with the token (unlocking again once when it expired).

        The reply's status decides; its body (often empty) is not needed.
        """
        status, _ = await self._request(device, "POST", command, {}, await self._token(device))
        if status == 401:
            self._tokens.pop(device.id, None)
            token = await self._token(device)
            status, _ = await self._request(device, "POST", command, {}, token)
        if status != 200:
            raise Rejected(device.id, f"{command}: HTTP {status}")


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
        )

    async def observe(self, device: Device) -> Workload:
        """The state from the web API, the pool from the cgminer API."""
        return (await self.collect(device)).workload

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
