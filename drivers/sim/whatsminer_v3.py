"""API v3 of a simulated Whatsminer: length-prefixed JSON on its own port, tokens per command.

Framing: each message is a 4-byte little-endian length and that many bytes of
JSON; a zero length is a heartbeat and is ignored; the connection stays open
for more requests.  ``split_replies`` writes each reply in three pieces with
short pauses (the length prefix itself split), as a slow link would.

Commands: ``get.device.info`` (param ``salt``, ``miner``, ``system``, ``error-code``
or none for every section; error-code lists the miner's ``error_codes`` as
``{code: when, "reason": text}``), ``get.miner.status`` (param ``summary``/``pools``/
``edevs`` joined with ``+``; hash rates in TH/s, power in W; summary with
board-temperature, fan speeds, elapsed and bootup-time; one edevs row per board), ``get.miner.setting``, and the writes ``set.miner.service``
(start/stop, as slow as v2's power_on/power_off), ``set.miner.power_percent``
(param 0..100), ``set.system.reboot`` (the miner restarts: its uptime starts
again) and ``set.system.led`` (param ``"auto"``, or a list of 1 to 4
``{color: red|green, period, duration, start}`` steps in ms: the LED is then
``manual``; ``get.device.info`` ``system`` ``ledstatus`` says which).  A write must carry ``account``, ``ts`` and ``token`` =
base64(sha256(cmd + password + salt + ts))[:8]; writes are refused while the
password is the default ("super"), as the documentation says real firmware does.
Reply codes: 0 ok; -1 failed (this simulator's "invalid token" and "no
permission" messages are its own: the vendor's exact codes for them are not
confirmed); -2 invalid command or parameter; -3 missing parameter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from drivers.asic.whatsminer_crypto import FRAME_HEADER, frame, v3_token
from drivers.sim.physics import MinerPhysics
from scheduler.core.model import Device

Reply = dict[str, Any]
DEFAULT_PASSWORD = "super"
ACCOUNTS = frozenset({"super", "user1", "user2", "user3"})
MAX_FRAME_BYTES = 64 * 1024
FIRMWARE_VERSION = "20240722.07.51.REL"
# Reasons as the vendor's get.device.info example gives them; other codes read "error".
ERROR_REASONS = {"531": "Slot1 not found.", "532": "Slot2 not found."}


class WhatsminerV3Host(Protocol):
    """What SimWhatsminerV3 uses of its miner (drivers.sim.whatsminer.SimWhatsminer)."""

    address: str
    device: Device
    physics: MinerPhysics
    salt: str
    model_string: str
    led_auto: bool
    power_pct: int
    power_off_delay_seconds: float
    power_on_delay_seconds: float
    power_pct_delay_seconds: float
    _clock: Callable[[], float]
    _wall_clock: Callable[[], float]

    @property
    def asleep(self) -> bool:
        """True while the miner sleeps."""
        ...

    def reboot(self) -> None:
        """Restart as a reboot would: the uptime starts again."""
        ...

    def settle(self) -> None:
        """Apply the delayed changes that are due."""
        ...

    def hashrate_hs(self, at: float | None = None) -> float:
        """Hash rate now (or at ``at``)."""
        ...

    def power_w(self, at: float | None = None) -> float:
        """Power draw now (or at ``at``)."""
        ...

    def chip_temperature_c(self, at: float | None = None) -> float:
        """Chip temperature now (or at ``at``)."""
        ...

    def set_asleep(self, asleep: bool) -> None:
        """Put the miner to sleep or wake it."""
        ...

    def set_power_level(self, power_level: float) -> None:
        """Run at a share of stock power."""
        ...

    def _later(self, delay_seconds: float, change: Callable[[], None]) -> None: ...

    def _pools_reply(self, _parameter: str | None) -> Reply: ...

    def _boards(self) -> list[Reply]: ...

    def _fans(self) -> tuple[int, int]: ...

    @property
    def error_codes(self) -> list[str]:
        """The error codes the miner reports now."""
        ...


class SimWhatsminerV3:
    """The v3 listener of one SimWhatsminer (shares its state and its slowness)."""

    def __init__(self, miner: WhatsminerV3Host, *, port: int = 0, password: str = "super") -> None:
        self.miner = miner
        self.password = password
        self.split_replies = False
        self.hang = False
        self.requests: list[str] = []
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

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
        """Stop listening and drop open connections (idempotent)."""
        server, self._server = self._server, None
        for writer in list(self._writers):
            writer.transport.abort()
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                (length,) = FRAME_HEADER.unpack(await reader.readexactly(FRAME_HEADER.size))
                if length == 0:
                    continue  # heartbeat
                if length > MAX_FRAME_BYTES:
                    break
                body = await reader.readexactly(length)
                if self.hang:
                    await asyncio.Event().wait()  # never answers; stop() drops it
                payload = frame(json.dumps(self.answer(body)).encode())
                if self.split_replies:
                    for piece in (payload[:2], payload[2:9], payload[9:]):
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(0.01)
                else:
                    writer.write(payload)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _reply(self, code: int, message: Any, command: str) -> Reply:
        return {
            "code": code,
            "when": int(self.miner._wall_clock()),
            "msg": message,
            "desc": command,
        }

    def answer(self, body: bytes) -> Reply:
        """The reply to one framed request."""
        self.miner.settle()
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._reply(-2, "invalid json", "")
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return self._reply(-2, "invalid command", "")
        command = request["cmd"]
        self.requests.append(command)
        param = request.get("param")
        if command.startswith("set."):
            refusal = self._refuse_write(request)
            if refusal is not None:
                return self._reply(-1, refusal, command)
        if command == "get.device.info":
            return self._device_info(param)
        if command == "get.miner.status":
            return self._status(param)
        if command == "get.miner.setting":
            setting = {"power-percent": self.miner.power_pct, "power-mode": "normal"}
            return self._reply(0, setting, command)
        if command == "set.miner.service":
            return self._service(param)
        if command == "set.miner.power_percent":
            return self._power_percent(param)
        if command == "set.system.reboot":
            self.miner.reboot()
            return self._reply(0, "ok", command)
        if command == "set.system.led":
            return self._led(param)
        return self._reply(-2, "invalid command", command)

    def _refuse_write(self, request: Reply) -> str | None:
        if self.password == DEFAULT_PASSWORD:
            return "no permission (change the default password)"
        ts, token = request.get("ts"), request.get("token")
        if request.get("account") not in ACCOUNTS or not isinstance(ts, int):
            return "invalid token"
        expected, _ = v3_token(request["cmd"], self.password, self.miner.salt, ts)
        return None if token == expected else "invalid token"

    def _device_info(self, param: Any) -> Reply:
        boards = self.miner._boards()
        sections: Reply = {
            "salt": self.miner.salt,
            "miner": {
                "working": "false" if self.miner.asleep else "true",
                "type": self.miner.model_string,
                "board-num": str(len(boards)),
            },
            "system": {
                "api": "3.0.0",
                "platform": "H616",
                "fwversion": FIRMWARE_VERSION,
                "ledstatus": "auto" if self.miner.led_auto else "manual",
            },
            "error-code": [
                {code: "2026-01-01 00:00:00", "reason": ERROR_REASONS.get(code, "error")}
                for code in self.miner.error_codes
            ],
        }
        if param is None:
            return self._reply(0, sections, "get.device.info")
        if param not in sections:
            return self._reply(-2, f"invalid param: {param}", "get.device.info")
        return self._reply(0, {param: sections[param]}, "get.device.info")

    def _status(self, param: Any) -> Reply:
        if not param:
            return self._reply(-3, "param item is null", "get.miner.status")
        result: Reply = {}
        boards = self.miner._boards()
        for part in str(param).split("+"):
            if part == "summary":
                result["summary"] = self._summary(boards)
            elif part == "edevs":
                result["edevs"] = [
                    {
                        "id": row["ID"],
                        "slot": row["Slot"],
                        "hash-average": round(row["MHS av"] / 1e6, 3),
                        "factory-hash": round(
                            self.miner.device.nominal_hashrate_hs / 1e12 / len(boards), 3
                        ),
                        "freq": row["Chip Frequency"],
                        "effective-chips": row["Effective Chips"],
                        "chip-temp-min": row["Chip Temp Min"],
                        "chip-temp-avg": row["Chip Temp Avg"],
                        "chip-temp-max": row["Chip Temp Max"],
                    }
                    for row in boards
                ]
            elif part == "pools":
                pools = self.miner._pools_reply(None)["POOLS"]
                result["pools"] = [
                    {
                        "id": row["POOL"],
                        "url": row["URL"],
                        "status": row["Status"].lower(),
                        "account": row["User"],
                        "stratum-active": row["Stratum Active"],
                    }
                    for row in pools
                ]
            else:
                return self._reply(-2, f"invalid param: {part}", "get.miner.status")
        return self._reply(0, result, "get.miner.status")

    def _summary(self, boards: list[Reply]) -> Reply:
        chip = self.miner.chip_temperature_c()
        fan_in, fan_out = self.miner._fans()
        elapsed = int(self.miner._clock() - self.miner.physics.started_at)
        return {
            "elapsed": elapsed,
            "bootup-time": elapsed + 101,  # the system boots before the mining service
            "board-temperature": [row["Temperature"] for row in boards],
            "chip-temp-min": round(chip - 6, 1),
            "chip-temp-avg": round(chip - 2, 1),
            "fan-speed-in": fan_in,
            "fan-speed-out": fan_out,
            "hash-realtime": round(self.miner.hashrate_hs() / 1e12, 3),
            "power-realtime": round(self.miner.power_w()),
            "chip-temp-max": round(chip, 1),
            "power-limit": round(self.miner.device.nominal_power_w * self.miner.power_pct / 100),
        }

    def _service(self, param: Any) -> Reply:
        if param not in ("start", "stop", "restart"):
            return self._reply(-2, f"invalid param: {param}", "set.miner.service")
        stopping = param == "stop"
        delay = (
            self.miner.power_off_delay_seconds if stopping else self.miner.power_on_delay_seconds
        )
        self.miner._later(delay, lambda: self.miner.set_asleep(stopping))
        return self._reply(0, "ok", "set.miner.service")

    def _led(self, param: Any) -> Reply:
        if param == "auto":
            self.miner.led_auto = True
            return self._reply(0, "ok", "set.system.led")
        steps = param if isinstance(param, list) and 1 <= len(param) <= 4 else None
        for step in steps or ():
            if not isinstance(step, dict) or step.get("color") not in ("red", "green"):
                steps = None
                break
            timings = [step.get(name) for name in ("period", "duration", "start")]
            if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in timings):
                steps = None
                break
        if steps is None:
            return self._reply(-2, f"invalid param: {param}", "set.system.led")
        self.miner.led_auto = False
        return self._reply(0, "ok", "set.system.led")

    def _power_percent(self, param: Any) -> Reply:
        if isinstance(param, bool) or not isinstance(param, int) or not 0 <= param <= 100:
            return self._reply(-2, f"invalid param: {param}", "set.miner.power_percent")

        def land() -> None:
            self.miner.power_pct = param
            self.miner.set_power_level(param / 100)

        self.miner._later(self.miner.power_pct_delay_seconds, land)
        return self._reply(0, "ok", "set.miner.power_percent")
