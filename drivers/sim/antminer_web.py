"""The stock Antminer web interface of a simulated miner: CGI endpoints over HTTP digest auth.

Facts followed: every CGI endpoint (and the page itself) needs HTTP digest
authentication (realm ``antMiner Configuration``, default user root); a request
without it gets 401 with that realm, which is how scanners recognise a stock
Antminer.  Endpoints (JSON replies, shapes of real firmware's web replies):

    get_system_info.cgi  minertype, macaddr, hostname, serinum, system_filesystem_version ...
    miner_type.cgi       miner_type, subtype, fw_version
    summary.cgi          INFO (CompileTime, miner_version, type), SUMMARY[0] rate_5s /
                         rate_avg / rate_ideal in GH/s and the status lamps
    stats.cgi            INFO, STATS[0]: chain[] per board (rate_real, asic_num,
                         temp_pcb/temp_chip/temp_pic four sensors, sn), fan[] and, on
                         firmware that measures it (``reports_watt``), ``watt``
    get_blink_status.cgi / blink.cgi   the locate LED
    get_miner_conf.cgi   the configuration; ``bitmain-work-mode`` "0" normal, "1" sleep
    set_miner_conf.cgi   POST the configuration back (JSON); ``miner-mode`` 0 or 1 changes
                         the work mode, a post without it (as some clients send for pools
                         or fans) keeps the mode; answers ``{"stats": "success", "code":
                         "M000", "msg": "OK!"}``

A mode change takes ``mode_delay_seconds`` (about 20 s on real hardware) to
land, so a client must read back; the reply comes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from drivers.sim import bmminer
from drivers.sim.miner import SimMiner, SimServer
from scheduler.core.model import Device, Pool

REALM = "antMiner Configuration"
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
PAGE = "<!DOCTYPE html><html><head><title>Antminer</title></head><body></body></html>"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _parse_digest(header: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in header.removeprefix("Digest ").split(","):
        key, _, value = part.strip().partition("=")
        fields[key.strip()] = value.strip().strip('"')
    return fields


class SimAntminerWeb:
    """An HTTP/1.1 server for one simulated stock Antminer's web interface."""

    def __init__(
        self,
        miner: SimMiner,
        *,
        port: int = 0,
        username: str = "root",
        password: str = "root",
        mode_delay_seconds: float = 20.0,
        reports_watt: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.miner = miner
        self.username = username
        self.password = password
        self.mode_delay_seconds = mode_delay_seconds
        self.reports_watt = reports_watt
        self.requests: list[str] = []
        self.unauthorized = 0
        self.blink = False
        self._clock = clock
        self._requested_port = port
        self._nonce = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pending: asyncio.TimerHandle | None = None
        self._mode = 0
        self._extra_conf: dict[str, Any] = {}

    @property
    def port(self) -> int:
        """The bound port."""
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
        if self._pending is not None:
            self._pending.cancel()
        server, self._server = self._server, None
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> SimAntminerWeb:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _authorized(self, method: str, path: str, header: str | None) -> bool:
        if header is None or not header.startswith("Digest "):
            return False
        fields = _parse_digest(header)
        if fields.get("username") != self.username or fields.get("nonce") != self._nonce:
            return False
        ha1 = _md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = _md5(f"{method}:{fields.get('uri', path)}")
        if fields.get("qop") == "auth":
            expected = _md5(
                f"{ha1}:{self._nonce}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}"
            )
        else:
            expected = _md5(f"{ha1}:{self._nonce}:{ha2}")
        return secrets.compare_digest(expected, fields.get("response", ""))

    # ---- replies ---------------------------------------------------------------------------

    def _model(self) -> str:
        return f"Antminer {self.miner.device.model}"

    def _mac(self) -> str:
        crc = zlib.crc32(self.miner.device.id.encode())
        return "02:" + ":".join(f"{(crc >> s) & 0xFF:02X}" for s in (24, 16, 8, 0)) + ":41"

    def _serial(self) -> str:
        return f"SIM{zlib.crc32(self.miner.device.id.encode()):08X}"

    def _status(self, message: str) -> dict[str, Any]:
        return {"STATUS": "S", "when": int(time.time()), "Msg": message, "api_version": "1.0.0"}

    def _info(self) -> dict[str, Any]:
        return {
            "miner_version": bmminer.MINER_VERSION,
            "CompileTime": bmminer.COMPILE_TIME,
            "type": self._model(),
        }

    def system_info(self) -> dict[str, Any]:
        """get_system_info.cgi."""
        return {
            "minertype": self._model(),
            "nettype": "DHCP",
            "netdevice": "eth0",
            "macaddr": self._mac(),
            "hostname": "Antminer",
            "ipaddress": self.miner.address,
            "netmask": "255.0.0.0",
            "gateway": "",
            "dnsservers": "",
            "system_mode": "GNU/Linux",
            "system_kernel_version": "Linux 4.9.113 #1 SMP PREEMPT",
            "system_filesystem_version": bmminer.COMPILE_TIME,
            "firmware_type": "Release",
            "serinum": self._serial(),
        }

    def miner_type(self) -> dict[str, Any]:
        """miner_type.cgi."""
        return {
            "miner_type": self._model(),
            "subtype": "BHB42601",
            "fw_version": bmminer.COMPILE_TIME,
        }

    def summary(self) -> dict[str, Any]:
        """summary.cgi: rates in GH/s and the status lamps."""
        now = self.miner.physics.now(None)
        rate = round(self.miner.hashrate_hs(now) / 1e9, 2)
        lamps = [
            {"type": kind, "status": "s", "code": 0, "msg": ""}
            for kind in ("rate", "network", "fans", "temp")
        ]
        row = {
            "elapsed": int(max(0.0, now - self.miner.physics.started_at)),
            "rate_5s": rate,
            "rate_30m": round(bmminer.average_ghs(self.miner, now), 2),
            "rate_avg": round(bmminer.average_ghs(self.miner, now), 2),
            "rate_ideal": round(self.miner.device.nominal_hashrate_hs / 1e9, 2),
            "rate_unit": "GH/s",
            "hw_all": 0,
            "bestshare": 0,
            "status": lamps,
        }
        return {"STATUS": self._status("summary"), "INFO": self._info(), "SUMMARY": [row]}

    def stats(self) -> dict[str, Any]:
        """stats.cgi: per-board rows, fans and (where measured) the input power."""
        now = self.miner.physics.now(None)
        chips = bmminer.chips_per_board(self.miner.device.model)
        rates = bmminer.board_rates_ghs(self.miner, now)
        chains = [
            {
                "index": index,
                "freq_avg": bmminer.FREQUENCY_MHZ,
                "rate_ideal": round(self.miner.device.nominal_hashrate_hs / 1e9 / len(rates), 2),
                "rate_real": round(rates[index], 2),
                "asic_num": chips,
                "asic": " " + " ".join(["ooo"] * (chips // 3)),
                "temp_pic": bmminer.pic_sensors(pcb),
                "temp_pcb": list(pcb),
                "temp_chip": list(chip),
                "hw": 0,
                "eeprom_loaded": True,
                "sn": f"{self._serial()}B{index}",
            }
            for index, (chip, pcb) in enumerate(self.miner.physics.board_temperatures_c(now))
        ]
        fans = bmminer.fan_rpms(self.miner, now)
        row: dict[str, Any] = {
            "elapsed": int(max(0.0, now - self.miner.physics.started_at)),
            "rate_5s": round(self.miner.hashrate_hs(now) / 1e9, 2),
            "rate_30m": round(bmminer.average_ghs(self.miner, now), 2),
            "rate_avg": round(bmminer.average_ghs(self.miner, now), 2),
            "rate_ideal": round(self.miner.device.nominal_hashrate_hs / 1e9, 2),
            "rate_unit": "GH/s",
            "chain_num": len(chains),
            "fan_num": len(fans),
            "fan": fans,
            "hwp_total": 0.0,
            "miner-mode": self._mode,
            "freq-level": 100,
            "chain": chains,
        }
        if self.reports_watt:
            row["watt"] = round(self.miner.power_w(now))
        return {"STATUS": self._status("stats"), "INFO": self._info(), "STATS": [row]}

    def conf(self) -> dict[str, Any]:
        """get_miner_conf.cgi."""
        pools = self.miner.handle("pools")["POOLS"]
        return {
            "pools": [{"url": p["URL"], "user": p["User"], "pass": "x"} for p in pools],
            "api-listen": True,
            "api-network": True,
            "api-groups": "A:stats:pools:devs:summary:version",
            "api-allow": "A:0/0,W:*",
            "bitmain-fan-ctrl": False,
            "bitmain-fan-pwm": "100",
            "bitmain-use-vil": True,
            "bitmain-freq": "675",
            "bitmain-voltage": "1400",
            "bitmain-ccdelay": "0",
            "bitmain-pwth": "0",
            "bitmain-work-mode": str(self._mode),
            "bitmain-freq-level": "100",
            **self._extra_conf,
        }

    def _set_mode(self, mode: int) -> None:
        self._mode = mode
        self.miner.set_asleep(mode == 1)

    def _set_conf(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            conf = json.loads(body)
        except ValueError:
            conf = None
        if not isinstance(conf, dict):
            return 400, {"stats": "error", "code": "M001", "msg": "bad configuration"}
        raw_mode = conf.get("miner-mode", conf.get("bitmain-work-mode"))
        for key in ("bitmain-fan-ctrl", "bitmain-fan-pwm", "freq-level"):
            if key in conf:
                self._extra_conf[key] = conf[key]
        if raw_mode is None:  # pools or fans only: the work mode stays
            return 200, {"stats": "success", "code": "M000", "msg": "OK!"}
        try:
            mode = int(raw_mode)
        except (TypeError, ValueError):
            return 400, {"stats": "error", "code": "M002", "msg": f"bad miner-mode {raw_mode!r}"}
        if mode not in (0, 1, 2, 3):
            return 400, {"stats": "error", "code": "M002", "msg": f"bad miner-mode {mode}"}
        sleep = 1 if mode == 1 else 0
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self.mode_delay_seconds <= 0:
            self._set_mode(sleep)
        else:
            loop = asyncio.get_running_loop()
            self._pending = loop.call_later(self.mode_delay_seconds, self._set_mode, sleep)
        return 200, {"stats": "success", "code": "M000", "msg": "OK!"}

    # ---- HTTP --------------------------------------------------------------------------------

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
                status, payload, extra = self._route(method, target, path, headers, body)
                data = (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
                kind = "text/html" if isinstance(payload, str) else "application/json"
                reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
                response = (
                    f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(data)}\r\n{extra}\r\n"
                ).encode() + data
                writer.write(response)
                await writer.drain()
        self._writers.discard(writer)
        writer.close()

    def _route(
        self, method: str, target: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | str, str]:
        if not self._authorized(method, target, headers.get("authorization")):
            self.unauthorized += 1
            challenge = (
                f'WWW-Authenticate: Digest realm="{REALM}", nonce="{self._nonce}", qop="auth"\r\n'
            )
            return 401, {"stats": "error", "msg": "unauthorized"}, challenge
        if method == "GET" and path in ("/", "/index.html"):
            return 200, PAGE, ""
        gets: dict[str, Callable[[], dict[str, Any]]] = {
            "/cgi-bin/get_system_info.cgi": self.system_info,
            "/cgi-bin/miner_type.cgi": self.miner_type,
            "/cgi-bin/summary.cgi": self.summary,
            "/cgi-bin/stats.cgi": self.stats,
            "/cgi-bin/get_miner_conf.cgi": self.conf,
            "/cgi-bin/get_blink_status.cgi": lambda: {"blink": self.blink},
        }
        if method == "GET" and path in gets:
            return 200, gets[path](), ""
        if method == "POST" and path == "/cgi-bin/set_miner_conf.cgi":
            status, payload = self._set_conf(body)
            return status, payload, ""
        if path == "/cgi-bin/reboot.cgi":  # stock firmware answers, then restarts
            self.miner.reboot()
            return 200, {"code": "R000", "msg": "OK!"}, ""
        if method == "POST" and path == "/cgi-bin/blink.cgi":
            try:
                wanted = json.loads(body or b"{}").get("blink")
            except (ValueError, AttributeError):
                wanted = None
            self.blink = str(wanted).lower() == "true"
            code = "B000" if self.blink else "B100"
            return 200, {"code": code, "msg": "OK!"}, ""
        return 404, {"stats": "error", "msg": "not found"}, ""


def simulate(
    device: Device, pools: Sequence[Pool], *, companion_port: int = 0, **kwargs: Any
) -> tuple[SimMiner, SimServer | None]:
    """Stock Antminer: the bmminer cgminer API and the web interface on ``companion_port``."""
    miner = SimMiner(device, pools, **kwargs)
    bmminer.play_bmminer(miner)
    clock = kwargs.get("clock", time.monotonic)
    return miner, SimAntminerWeb(miner, port=companion_port, mode_delay_seconds=0.0, clock=clock)
