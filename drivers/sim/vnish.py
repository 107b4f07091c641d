"""VNish firmware on a simulated Antminer: its cgminer API and its web API, as real replies show.

cgminer API on 4028 (shapes of replies recorded from an Antminer S21 Pro on VNish 1.2.7):

- every STATUS Description is ``cgminer 4.11.1``; ``version`` is an invalid command
  (``STATUS`` ``E``, ``Msg`` ``Invalid command``): VNish is recognised by ``stats``,
  whose STATS[0] ``Type`` is ``Antminer S21 Pro (Vnish 1.2.7)`` (``Cgminer`` 1.2.7);
- ``summary`` in GH/s (``GHS 5s``, ``GHS av``, ``GHS 30m``) with ``Fee Percent``, no Power;
- ``stats`` STATS[1]: per chain ``chain_consumptionN`` (W), ``chain_rateN`` /
  ``chain_rateidealN`` (GH/s numbers), ``chain_acnN``, ``chain_volN``, ``freq_avgN``,
  ``chain_stateN``; ``tempN`` / ``temp2_N`` / ``temp3_N``, ``temp_pcbN`` / ``temp_chipN``;
  ``fanN``, ``fan_pwm``; ``GHS 5s`` as a string; ``state``, ``total_rate``;
- ``pools`` lists the user pools and the ``DevFee`` pool (URL and user ``DevFee``,
  ``Type`` 1), which is Stratum Active while the fee is mined;
- ``devdetails`` one row (``BTM_S21PRO``, driver ``bitmain_s21pro_drv``).

The web API on port 80 (``/api/v1``): the page names AnthillOS (VNish's web UI);
``POST unlock`` with ``{"pw": ...}`` returns a token, sent back in ``Authorization``
(bare or ``Bearer``); ``info`` (model, ``fw_version``, ``hr_measure``, network),
``status`` (``miner_state``), ``summary`` (hash rates in GH/s, ``power_consumption`` /
``power_usage`` in W, chains with temperatures, fans, pools), ``chains``,
``chains/factory-info``, ``settings`` (``miner.overclock.preset``: the power preset in W,
or ``disabled``), ``autotune/presets`` and ``perf-summary``; ``POST mining/stop``,
``mining/start``, ``mining/pause``, ``mining/resume`` and ``settings`` (a preset) act
on the miner.  Reads are bounded (request size, header lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from drivers.sim import bmminer
from drivers.sim.miner import BOARDS, Reply, SimMiner, SimServer
from scheduler.core.model import Device, Pool

DESCRIPTION = "cgminer 4.11.1"
VNISH_VERSION = "1.2.7"
COMPILE_TIME = "2025-12-22 19:12:30"
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
PAGE = (
    "<!DOCTYPE html><html><head><title>AnthillOS</title></head>"
    '<body><div id="app">AnthillOS</div></body></html>'
)
PRESET_STEPS = (0.7, 0.8, 0.9, 1.0)  # presets as shares of the stock power
DEVFEE_SHARE = 0.028  # the fee share the capture shows (Fee Percent 2.81)


def model_type(miner: SimMiner) -> str:
    """STATS[0] Type: ``Antminer S21 Pro (Vnish 1.2.7)``."""
    return f"Antminer {miner.device.model} (Vnish {VNISH_VERSION})"


def chain_power_w(miner: SimMiner, now: float) -> list[int]:
    """Each chain's consumption in W (the miner's input power split evenly)."""
    return [round(miner.power_w(now) / BOARDS)] * BOARDS


def play_vnish(miner: SimMiner) -> None:
    """Make ``miner``'s cgminer API answer as VNish does."""
    miner.become_stock_bmminer()
    miner.description = DESCRIPTION
    chips = bmminer.chips_per_board(miner.device.model)

    def invalid(_parameter: str | None) -> Reply:
        return miner._status("E", 14, "Invalid command")

    def summary(_parameter: str | None) -> Reply:
        row = bmminer.summary_row(miner, miner._clock())
        row["Fee Percent"] = round(DEVFEE_SHARE * 100, 6)
        return miner._ok(11, "Summary", "SUMMARY", [row])

    def stats(_parameter: str | None) -> Reply:
        now = miner._clock()
        identity = {
            "Type": model_type(miner),
            "Miner": "0.0.0",
            "Cgminer": VNISH_VERSION,
            "CompileTime": COMPILE_TIME,
        }
        rates = bmminer.board_rates_ghs(miner, now)
        boards = miner.physics.board_temperatures_c(now)
        table: Reply = {
            "Elapsed": int(max(0.0, now - miner.physics.started_at)),
            "GHS 5s": f"{miner.hashrate_hs(now) / 1e9:.2f}",
            "GHS av": round(bmminer.average_ghs(miner, now), 2),
        }
        for slot, (chip, pcb) in enumerate(boards, start=1):
            table[f"temp_sens{slot}"] = "m-m-m-m"
            table[f"temp{slot}"] = max(pcb)
            table[f"temp2_{slot}"] = max(chip)
            table[f"temp3_{slot}"] = max(chip)
            table[f"temp_chip{slot}"] = "-".join(str(v) for v in chip)
            table[f"temp_pcb{slot}"] = "-".join(str(v) for v in pcb)
        for slot, watts in enumerate(chain_power_w(miner, now), start=1):
            table[f"chain_consumption{slot}"] = watts
            table[f"chain_hw{slot}"] = 0
        fans = bmminer.fan_rpms(miner, now)
        table.update({"fan_num": len(fans), "fan_mode": 0, "fan_pwm": round(fans[0] / 65)})
        for fan, rpm in enumerate(fans, start=1):
            table[f"fan{fan}"] = rpm
        ideal = miner.device.nominal_hashrate_hs / 1e9 / BOARDS
        for slot, rate in enumerate(rates, start=1):
            table[f"chain_rateideal{slot}"] = round(ideal, 3)
            table[f"chain_rate{slot}"] = round(rate, 3)
            table[f"freq_avg{slot}"] = float(bmminer.FREQUENCY_MHZ)
            table[f"chain_vol{slot}"] = 13000
        state = "stopped" if miner.asleep else "mining"
        table.update(
            {
                "state": state,
                "total_rate": round(miner.hashrate_hs(now) / 1e9, 2),
                "total_rateideal": round(miner.device.nominal_hashrate_hs / 1e9, 2),
                "total_acn": chips * BOARDS,
            }
        )
        for slot in range(1, BOARDS + 1):
            table[f"chain_state{slot}"] = state
            table[f"chain_fault{slot}"] = ""
            table[f"chain_acn{slot}"] = chips
        return miner._ok(70, "CGMiner stats", "STATS", [identity, table])

    def pools(parameter: str | None) -> Reply:
        reply = miner._pools_reply(parameter)
        rows = []
        for row in reply["POOLS"]:
            url = row["URL"].partition("://")[2] or row["URL"]  # VNish lists host:port
            rows.append(
                {
                    "POOL": row["POOL"],
                    "URL": url,
                    "Type": 0,
                    "User": row["User"],
                    "Status": row["Status"],
                    "Priority": row["Priority"],
                    "Stratum Active": row["Stratum Active"],
                    "Has Vmask": True,
                }
            )
        fee_active = not miner.asleep
        rows.append(
            {
                "POOL": len(rows),
                "URL": "DevFee",
                "Type": 1,
                "User": "DevFee",
                "Status": "Alive",
                "Priority": len(rows),
                "Stratum Active": fee_active,
                "Has Vmask": True,
            }
        )
        return miner._ok(7, f"{len(rows)} Pool(s)", "POOLS", rows)

    def devdetails(_parameter: str | None) -> Reply:
        name = "BTM_" + miner.device.model.upper().replace(" ", "")
        driver = "bitmain_" + miner.device.model.lower().replace(" ", "") + "_drv"
        row = {
            "DEVDETAILS": 0,
            "Name": name,
            "ID": 0,
            "Driver": driver,
            "Kernel": "",
            "Model": "",
            "Device Path": "",
        }
        return miner._ok(69, "Device Details", "DEVDETAILS", [row])

    miner._handlers.pop("config", None)
    miner._handlers.update(
        {
            "version": invalid,
            "summary": summary,
            "stats": stats,
            "pools": pools,
            "devdetails": devdetails,
        }
    )


class SimVnishWeb:
    """An HTTP/1.1 server for one simulated VNish miner's page and ``/api/v1`` web API."""

    def __init__(
        self,
        miner: SimMiner,
        *,
        port: int = 0,
        password: str = "admin",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.miner = miner
        self.password = password
        self.requests: list[str] = []
        self.unauthorized = 0
        self.find_miner = False
        self._clock = clock
        self._requested_port = port
        self._token = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.preset: str = str(round(miner.physics.mining_power_w))

    @property
    def port(self) -> int:
        """The bound port (the requested one before start)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on the miner's address (idempotent)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.miner.address, self._requested_port
            )

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            server.close()
            await server.wait_closed()

    # ---- replies ---------------------------------------------------------------------------

    def _serial(self) -> str:
        return f"SIM{zlib.crc32(self.miner.device.id.encode()):08X}"

    def _mac(self) -> str:
        crc = zlib.crc32(self.miner.device.id.encode())
        return "02:" + ":".join(f"{(crc >> s) & 0xFF:02X}" for s in (24, 16, 8, 0)) + ":56"

    def _state(self) -> str:
        return "stopped" if self.miner.asleep else "mining"

    def _uptime(self) -> str:
        elapsed = int(max(0.0, self.miner.physics.now(None) - self.miner.physics.started_at))
        days, rest = divmod(elapsed, 86400)
        clock = f"{rest // 3600}:{rest % 3600 // 60:02d}"
        return f"{days} days, {clock}" if days else clock

    def info(self) -> dict[str, Any]:
        """GET /api/v1/info: model, firmware, units, network."""
        return {
            "miner": f"Antminer {self.miner.device.model}",
            "model": self.miner.device.model,
            "fw_name": "Vnish",
            "fw_version": VNISH_VERSION,
            "build_time": COMPILE_TIME,
            "platform": "xil",
            "install_type": "nand",
            "hr_measure": "GH/s",
            "serial": self._serial(),
            "system": {
                "os": "GNU/Linux",
                "miner_name": f"Antminer {self.miner.device.model}",
                "uptime": self._uptime(),
                "network_status": {
                    "mac": self._mac(),
                    "dhcp": True,
                    "ip": self.miner.address,
                    "netmask": "255.0.0.0",
                    "gateway": "",
                    "dns": [],
                    "hostname": self.miner.device.id,
                },
            },
        }

    def status(self) -> dict[str, Any]:
        """GET /api/v1/status."""
        return {
            "miner_state": self._state(),
            "miner_state_time": int(self.miner.physics.now(None) - self.miner.physics.started_at),
            "find_miner": self.find_miner,
            "restart_required": False,
            "reboot_required": False,
            "unlocked": True,
        }

    def _chain_rows(self, now: float) -> list[dict[str, Any]]:
        rates = bmminer.board_rates_ghs(self.miner, now)
        watts = chain_power_w(self.miner, now)
        boards = self.miner.physics.board_temperatures_c(now)
        ideal = self.miner.device.nominal_hashrate_hs / 1e9 / BOARDS
        return [
            {
                "id": index + 1,
                "frequency": float(bmminer.FREQUENCY_MHZ),
                "voltage": 13000,
                "power_consumption": watts[index],
                "hashrate_ideal": round(ideal, 2),
                "hashrate_rt": round(rates[index], 2),
                "hashrate_percentage": round(100 * rates[index] / ideal, 1) if ideal else 0.0,
                "hw_errors": 0,
                "pcb_temp": {"min": min(pcb), "max": max(pcb)},
                "chip_temp": {"min": min(chip), "max": max(chip)},
                "chip_statuses": {"red": 0, "orange": 0, "grey": 0},
                "status": {"state": self._state(), "description": ""},
            }
            for index, (chip, pcb) in enumerate(boards)
        ]

    def summary(self) -> dict[str, Any]:
        """GET /api/v1/summary: the miner's rates, power, chains, cooling and pools."""
        now = self.miner.physics.now(None)
        chains = self._chain_rows(now)
        power = sum(chain_power_w(self.miner, now))
        rate = round(self.miner.hashrate_hs(now) / 1e9, 2)
        fans = [
            {"id": index, "rpm": rpm, "status": "ok", "max_rpm": 6600}
            for index, rpm in enumerate(bmminer.fan_rpms(self.miner, now))
        ]
        pools = [
            {
                "id": row["POOL"],
                "url": row["URL"],
                "pool_type": "DevFee" if row["URL"] == "DevFee" else "UserPool",
                "user": row["User"],
                "status": "working" if row["Stratum Active"] else "offline",
                "accepted": 0,
                "rejected": 0,
                "stale": 0,
            }
            for row in self.miner.handle("pools")["POOLS"]
        ]
        return {
            "miner": {
                "miner_status": {"miner_state": self._state(), "miner_state_time": 0},
                "miner_type": model_type(self.miner),
                "hardware_version": "",
                "compile_time": COMPILE_TIME,
                "average_hashrate": round(bmminer.average_ghs(self.miner, now), 2),
                "instant_hashrate": rate,
                "hr_realtime": rate,
                "hr_average": round(bmminer.average_ghs(self.miner, now), 2),
                "hr_nominal": round(self.miner.device.nominal_hashrate_hs / 1e9, 2),
                "hr_stock": round(self.miner.device.nominal_hashrate_hs / 1e9, 2),
                "pcb_temp": {
                    "min": min(c["pcb_temp"]["min"] for c in chains),
                    "max": max(c["pcb_temp"]["max"] for c in chains),
                },
                "chip_temp": {
                    "min": min(c["chip_temp"]["min"] for c in chains),
                    "max": max(c["chip_temp"]["max"] for c in chains),
                },
                "power_consumption": power,
                "power_usage": power,
                "power_efficiency": round(power / (rate / 1e3), 2) if rate else 0.0,
                "hw_errors_percent": 0.0,
                "hw_errors": 0,
                "devfee_percent": round(DEVFEE_SHARE * 100, 2),
                "devfee": 0.0,
                "pools": pools,
                "cooling": {
                    "fan_num": len(fans),
                    "fans": fans,
                    "settings": {"mode": {"name": "auto"}},
                    "fan_duty": 90,
                },
                "chains": chains,
                "found_blocks": 0,
                "best_share": 0,
                "overclock": {"preset": self.preset},
            }
        }

    def chains(self) -> list[dict[str, Any]]:
        """GET /api/v1/chains: each chain with its chips (hash rate, temperature)."""
        now = self.miner.physics.now(None)
        chips = bmminer.chips_per_board(self.miner.device.model)
        rows = []
        for chain, (chip, _pcb) in zip(
            self._chain_rows(now), self.miner.physics.board_temperatures_c(now), strict=True
        ):
            per_chip = chain["hashrate_rt"] / chips
            rows.append(
                {
                    "id": chain["id"],
                    "frequency": chain["frequency"],
                    "chips": [
                        {
                            "id": index,
                            "hr": round(per_chip, 2),
                            "temp": chip[index % len(chip)],
                            "volt": 320,
                            "freq": bmminer.FREQUENCY_MHZ,
                        }
                        for index in range(chips)
                    ],
                }
            )
        return rows

    def presets(self) -> list[dict[str, Any]]:
        """GET /api/v1/autotune/presets: power presets in W (all tuned)."""
        stock_w = self.miner.physics.mining_power_w
        stock_ths = self.miner.physics.mining_hashrate_hs / 1e12
        return [
            {
                "name": str(round(stock_w * share)),
                "pretty": f"{round(stock_w * share)} watt ~ {round(stock_ths * share)} TH",
                "status": "tuned",
                "modded_psu_required": False,
            }
            for share in PRESET_STEPS
        ]

    def settings(self) -> dict[str, Any]:
        """GET /api/v1/settings."""
        pools = [
            {"url": row["URL"], "user": row["User"], "pass": "x", "order": row["POOL"]}
            for row in self.miner.handle("pools")["POOLS"]
            if row["URL"] != "DevFee"
        ]
        return {
            "miner": {
                "overclock": {
                    "preset": self.preset,
                    "globals": {"volt": 13000, "freq": bmminer.FREQUENCY_MHZ},
                    "chains": [{"freq": bmminer.FREQUENCY_MHZ} for _ in range(BOARDS)],
                },
                "cooling": {"mode": {"name": "auto"}},
                "pools": pools,
            },
            "regional": {"timezone": {"current": "GMT+0"}},
        }

    def _set_preset(self, preset: Any) -> bool:
        names = {p["name"] for p in self.presets()}
        if str(preset) not in names:
            return False
        self.preset = str(preset)
        self.miner.set_power_level(float(preset) / self.miner.physics.mining_power_w)
        return True

    def _post(self, command: str, body: Any) -> tuple[int, Any]:
        if command in ("mining/stop", "mining/pause"):
            self.miner.set_asleep(True)
            return 200, {}
        if command in ("mining/start", "mining/resume", "mining/restart"):
            self.miner.set_asleep(False)
            return 200, {}
        if command == "system/reboot":
            self.miner.reboot()
            return 200, {}
        if command == "find-miner":
            self.find_miner = not self.find_miner
            return 200, {"on": self.find_miner}
        if command == "settings":
            preset = (
                body.get("miner", {}).get("overclock", {}).get("preset")
                if isinstance(body, dict)
                else None
            )
            if preset is not None and not self._set_preset(preset):
                return 400, {"err": f"unknown preset {preset!r}"}
            return 200, {"restart_required": False, "reboot_required": False}
        return 404, {"err": "not found"}

    # ---- HTTP --------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        token = (header or "").removeprefix("Bearer ").strip()
        return secrets.compare_digest(token, self._token)

    def _route(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if method == "GET" and path in ("/", "/index.html"):
            return 200, PAGE
        if not path.startswith("/api/v1/"):
            return 404, {"err": "not found"}
        command = path.removeprefix("/api/v1/")
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            return 400, {"err": "bad JSON"}
        if method == "POST" and command == "unlock":
            if isinstance(parsed, dict) and parsed.get("pw") == self.password:
                return 200, {"token": self._token}
            self.unauthorized += 1
            return 403, {"err": "wrong password"}
        public: dict[str, Callable[[], Any]] = {"info": self.info, "status": self.status}
        if method == "GET" and command in public:
            return 200, public[command]()
        if not self._authorized(headers.get("authorization")):
            self.unauthorized += 1
            return 401, {"err": "unauthorized"}
        reads: dict[str, Callable[[], Any]] = {
            "summary": self.summary,
            "chains": self.chains,
            "chains/factory-info": lambda: {
                "hr_stock": round(self.miner.device.nominal_hashrate_hs / 1e9, 2),
                "psu_serial": self._serial() + "P",
            },
            "settings": self.settings,
            "autotune/presets": self.presets,
            "perf-summary": lambda: {
                "current_preset": next(
                    (p for p in self.presets() if p["name"] == self.preset), None
                )
            },
        }
        if method == "GET" and command in reads:
            return 200, reads[command]()
        if method == "POST":
            return self._post(command, parsed)
        return 404, {"err": "not found"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(
            ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError
        ):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[:MAX_HEADER_LINES]
                method, target, _ = lines[0].split(" ", 2)
                path = target.partition("?")[0]
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = min(int(headers.get("content-length", "0")), MAX_BODY_BYTES)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(f"{method} {path}")
                status, payload = self._route(method, path, headers, body)
                data = (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
                kind = "text/html" if isinstance(payload, str) else "application/json"
                reason = {
                    200: "OK",
                    400: "Bad Request",
                    401: "Unauthorized",
                    403: "Forbidden",
                    404: "Not Found",
                }
                writer.write(
                    (
                        f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {kind}\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n"
                    ).encode()
                    + data
                )
                await writer.drain()
        self._writers.discard(writer)
        writer.close()


def simulate(
    device: Device, pools: Sequence[Pool], *, companion_port: int = 0, **kwargs: Any
) -> tuple[SimMiner, SimServer | None]:
    """VNish: the cgminer API as VNish answers it and the web API on ``companion_port``."""
    miner = SimMiner(device, pools, **kwargs)
    play_vnish(miner)
    return miner, SimVnishWeb(miner, port=companion_port, clock=kwargs.get("clock", time.monotonic))
