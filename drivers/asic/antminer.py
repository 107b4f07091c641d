"""Stock Antminer (bmminer) personality: telemetry over the cgminer API, sleep over the web CGI.

Stock firmware allows no privileged cgminer commands by default and has no
curtail, so sleep and wake go through the web interface: read the
configuration (``GET /cgi-bin/get_miner_conf.cgi``), set ``miner-mode`` (0
normal, 1 sleep) and post it back (``POST /cgi-bin/set_miner_conf.cgi``), with
HTTP digest auth.  The change takes about 20 s, so apply() confirms by reading
``bitmain-work-mode`` back until it shows the requested mode
(confirm_timeout_seconds defaults to 60 s for this driver).

Power: stock bmminer reports no input power on the cgminer API.  Newer stock
firmware (2023 and later, e.g. S21 XP Hyd., S23 Hyd.) measures it and reports it
in the web interface's ``GET /cgi-bin/stats.cgi`` as STATS[0] ``watt``; that is
read when present.  Otherwise Sample.power_w is the model's nominal power
scaled by the measured hash rate (the sleep power when asleep) and
Sample.power_estimated is True, so the Guard's power cap still has a
conservative number and the API/metrics can say it is an estimate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from drivers.asic.cgminer import CgminerClient, CgminerDriver, MinerReading
from drivers.asic.cgminer_parse import parse_number
from drivers.asic.config import AntminerOptions
from drivers.asic.registry import AsicPlugin
from drivers.bounds import MAX_REPLY_BYTES, json_problem
from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from scheduler.core.model import Device, Pool, Sample, Workload, WorkloadKind

GET_CONF = "/cgi-bin/get_miner_conf.cgi"
GET_STATS = "/cgi-bin/stats.cgi"
SET_CONF = "/cgi-bin/set_miner_conf.cgi"
BLINK = "/cgi-bin/blink.cgi"
BLINK_STATUS = "/cgi-bin/get_blink_status.cgi"
REBOOT = "/cgi-bin/reboot.cgi"
MODE_NORMAL, MODE_SLEEP = 0, 1


class AntminerWebClient:
    """The two CGI calls this driver needs, with digest auth and errors mapped to DriverError."""

    def __init__(self, options: AntminerOptions, http: httpx.AsyncClient | None = None) -> None:
        self._options = options
        self._http = http or httpx.AsyncClient(timeout=options.timeout_seconds)
        self._auth = httpx.DigestAuth(options.web_username, options.web_password.get_secret_value())

    async def _call(self, device: Device, method: str, path: str, body: Any = None) -> Any:
        url = f"http://{device.address}:{self._options.web_port}{path}"
        try:
            response = await self._http.request(method, url, json=body, auth=self._auth)
        except httpx.TimeoutException as exc:
            raise Timeout(
                device.id, f"{path}: no reply in {self._options.timeout_seconds:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise Unavailable(device.id, f"{path}: {exc}") from exc
        if response.status_code == 401:
            raise Fatal(device.id, f"{path}: web login refused (check web_username/web_password)")
        if response.status_code != 200:
            raise Rejected(device.id, f"{path}: HTTP {response.status_code}")
        if len(response.content) > MAX_REPLY_BYTES:
            raise MalformedReply(device.id, f"{path}: reply over {MAX_REPLY_BYTES} bytes")
        problem = json_problem(response.content)
        if problem is not None:
            raise MalformedReply(device.id, f"{path}: reply {problem}")
        try:
            return response.json()
        except ValueError as exc:
            raise MalformedReply(device.id, f"{path}: reply is not JSON") from exc

    async def get_conf(self, device: Device) -> dict[str, Any]:
        """The miner configuration (a JSON object)."""
        conf = await self._call(device, "GET", GET_CONF)
        if not isinstance(conf, dict):
            raise MalformedReply(device.id, f"{GET_CONF}: not a JSON object")
        return conf

    async def stats_watt(self, device: Device) -> float | None:
        """STATS[0] ``watt`` of the web stats (W), None where the firmware has none."""
        try:
            stats = await self._call(device, "GET", GET_STATS)
        except Rejected:  # older firmware: no stats.cgi
            return None
        rows = stats.get("STATS") if isinstance(stats, dict) else None
        first = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], dict) else {}
        watt = parse_number(first.get("watt"))
        return watt if watt is not None and watt > 0 else None

    async def blink(self, device: Device, on: bool) -> None:
        """POST blink.cgi: start or stop the locate LED."""
        await self._call(device, "POST", BLINK, {"blink": "true" if on else "false"})

    async def blinking(self, device: Device) -> bool:
        """get_blink_status.cgi ``blink``."""
        reply = await self._call(device, "GET", BLINK_STATUS)
        value = reply.get("blink") if isinstance(reply, dict) else None
        if not isinstance(value, bool | str):
            raise MalformedReply(device.id, f"{BLINK_STATUS}: no blink field")
        return value is True or str(value).lower() == "true"

    async def reboot(self, device: Device) -> None:
        """GET reboot.cgi: the firmware answers, then restarts."""
        await self._call(device, "GET", REBOOT)

    async def set_mode(self, device: Device, mode: int) -> None:
        """Post the configuration back with ``miner-mode`` set (read-modify-write)."""
        conf = await self.get_conf(device)
        conf["miner-mode"] = mode
        reply = await self._call(device, "POST", SET_CONF, conf)
        if not isinstance(reply, dict) or reply.get("stats") != "success":
            raise Rejected(device.id, f"{SET_CONF}: {reply!r}")


def work_mode(device: Device, conf: Mapping[str, Any]) -> int:
    """``bitmain-work-mode`` as an int (0 normal, 1 sleep); MalformedReply when missing."""
    value = conf.get("bitmain-work-mode", conf.get("miner-mode"))
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MalformedReply(device.id, f"no work mode in the configuration ({value!r})") from None


class AntminerDriver(CgminerDriver):
    """Stock Antminer: cgminer API reads, web-CGI sleep/wake, estimated power."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        options: AntminerOptions,
        *,
        concurrency: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        client: CgminerClient | None = None,
        web: AntminerWebClient | None = None,
    ) -> None:
        super().__init__(
            pools, options, concurrency=concurrency, clock=clock, sleep=sleep, client=client
        )
        self.web = web or AntminerWebClient(options)
        self._estimated: set[str] = set()  # devices whose last read had no power reading

    def _missing_power_w(self, device: Device, hashrate_hs: float) -> float:
        """Stock bmminer reports no power: nominal power scaled by the measured hash rate."""
        self._estimated.add(device.id)
        share = hashrate_hs / device.nominal_hashrate_hs if device.nominal_hashrate_hs else 1.0
        return device.nominal_power_w * min(1.5, max(0.0, share))

    async def _read(self, device: Device) -> MinerReading:
        reading = await super()._read(device)
        if device.id in self._estimated:
            watt = await self.web.stats_watt(device)
            if watt is not None:
                self._estimated.discard(device.id)
                reading = dataclasses.replace(reading, power_w=watt)
        asleep = work_mode(device, await self.web.get_conf(device)) == MODE_SLEEP
        if not asleep:
            return reading
        return MinerReading(
            asleep=True,
            pool_url=None,
            pools=reading.pools,
            power_w=device.sleep_power_w if device.id in self._estimated else reading.power_w,
            hashrate_hs=reading.hashrate_hs,
            temperature_c=reading.temperature_c,
            observed_at=reading.observed_at,
            health=reading.health,
        )

    async def collect(self, device: Device) -> Sample:
        """A fresh sample; power_estimated says when the firmware reported no power."""
        self._estimated.discard(device.id)
        sample = await super().collect(device)
        if device.id not in self._estimated:
            return sample
        return dataclasses.replace(sample, power_estimated=True)

    async def reboot(self, device: Device) -> None:
        """Reboot through the web interface (verified by the uptime starting again)."""
        await self.web.reboot(device)

    async def set_locate(self, device: Device, on: bool) -> None:
        """Blink the locate LED (blink.cgi)."""
        await self.web.blink(device, on)

    async def locate_on(self, device: Device) -> bool:
        """Whether the locate LED blinks (get_blink_status.cgi)."""
        return await self.web.blinking(device)

    async def observe(self, device: Device) -> Workload:
        """The work mode from the web configuration, the pool from the cgminer API."""
        return (await self.collect(device)).workload

    async def _curtail(self, device: Device, action: str) -> None:
        await self.web.set_mode(device, MODE_SLEEP if action == "sleep" else MODE_NORMAL)

    def _refusal(self, device: Device, workload: Workload) -> str | None:
        if workload.kind is WorkloadKind.MINE and workload.power_level != 1.0:
            return "stock Antminer firmware has no power targets"
        return super()._refusal(device, workload)


PLUGINS = (
    AsicPlugin(
        tag="antminer",
        options=AntminerOptions,
        factory=AntminerDriver,
        simulator="drivers.sim.antminer_web:simulate",
        version_keys=("BMMiner",),
    ),
)
