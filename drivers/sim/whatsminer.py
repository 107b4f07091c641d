"""A simulated Whatsminer (API v2 on the cgminer port; API v3 via drivers/sim/whatsminer_v3.py).

Behaviour played, from the WhatsMiner API V2.0.x documentation and the public
clients (see drivers/asic/whatsminer.py):

* reads in plain text: ``summary`` (Whatsminer fields: Power, Power Limit, Chip
  Temp Max, HS RT ...), ``pools``, ``devdetails``, ``get_version``, ``get_psu``,
  ``status`` (STATUS inline; Msg {"btmineroff": ...}; "Firmware Version" wrapped
  in single quotes as real firmware does; ``mineroff_key`` plays newer firmware);
* replies end at connection close, without cgminer's NUL;
* ``get_token`` gives time (last 4 digits of the clock), salt (fixed per miner)
  and newsalt (fresh); the miner keeps each sign ``token_lifetime_seconds`` and at
  most ``max_tokens`` at once (Code 136); the limit is per miner here, per client
  IP on real firmware;
* writes only as ``{"enc": 1, "data": ...}``: the simulator decrypts with the key
  its own password gives, so a wrong password fails for real (Code 23), checks the
  sign against the tokens it issued (Code 135), and encrypts the reply; plain-text
  writes and writes while ``write_enabled`` is off get Code 45 "can't access write cmd";
* slowness: ``power_off`` answers at once (respbefore) and ``status`` shows
  btmineroff only after ``power_off_delay_seconds``; ``power_on`` takes
  ``power_on_delay_seconds``; ``set_power_pct`` lands after ``power_pct_delay_seconds``.
"""

from __future__ import annotations

import json
import random
import string
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from drivers.asic.whatsminer_crypto import (
    md5_crypt_hash,
    v2_aes_key,
    v2_decrypt,
    v2_encrypt,
    v2_key,
)
from drivers.sim.miner import Reply, SimMiner, SimServer
from drivers.sim.tcp import Fault
from drivers.sim.whatsminer_v3 import SimWhatsminerV3
from scheduler.core.model import Device, Pool

FIRMWARE_VERSION = "20230714.15.REL"
API_VERSION = "2.0.5"
_SALT_CHARS = string.ascii_letters + string.digits


class SimWhatsminer(SimMiner):
    """One simulated Whatsminer: API v2 with tokens and AES, slow power changes."""

    def __init__(
        self,
        device: Device,
        pools: Sequence[Pool],
        *,
        password: str = "admin",
        power_off_delay_seconds: float = 5.0,
        power_on_delay_seconds: float = 30.0,
        power_pct_delay_seconds: float = 2.0,
        token_lifetime_seconds: float = 1800.0,
        max_tokens: int = 32,
        v3_port: int = 0,
        v3_password: str = "super",
        **kwargs: Any,
    ) -> None:
        super().__init__(device, pools, **kwargs)
        self.nul_terminator = False
        self.password = password
        self.write_enabled = True
        self.mineroff_key = "btmineroff"
        self.power_off_delay_seconds = power_off_delay_seconds
        self.power_on_delay_seconds = power_on_delay_seconds
        self.power_pct_delay_seconds = power_pct_delay_seconds
        self.token_lifetime_seconds = token_lifetime_seconds
        self.max_tokens = max_tokens
        self.power_pct = 100
        self.tokens_issued = 0
        self._rng = random.Random(zlib.crc32(b"whatsminer:" + device.id.encode()))
        self.salt = "".join(self._rng.choice(_SALT_CHARS) for _ in range(8))
        self._signs: dict[str, float] = {}  # sign -> issued at (miner clock)
        self._pending: list[tuple[float, Callable[[], None]]] = []
        self._handlers = {
            "summary": self._wm_summary,
            "pools": self._pools_reply,
            "devdetails": self._devdetails,
            "get_version": self._get_version,
            "get_psu": self._get_psu,
            "status": self._wm_status_reply,
            "get_token": self._get_token,
        }
        self.v3 = SimWhatsminerV3(self, port=v3_port, password=v3_password)
        self._writes: dict[str, Callable[[Reply], Reply]] = {
            "power_off": self._power_off,
            "power_on": self._power_on,
            "set_power_pct": self._set_power_pct,
            "update_pools": self._update_pools,
        }

    async def start(self) -> None:
        """Listen on the v2 port and the v3 port."""
        await super().start()
        await self.v3.start()

    async def stop(self) -> None:
        """Stop both listeners (idempotent)."""
        await self.v3.stop()
        await super().stop()

    # ---- time ---------------------------------------------------------------------------

    def settle(self) -> None:
        """Apply the changes whose delay has passed (lazy, from the injected clock)."""
        now = self._clock()
        due = [change for at, change in self._pending if at <= now]
        self._pending = [(at, change) for at, change in self._pending if at > now]
        for change in due:
            change()

    def _later(self, delay_seconds: float, change: Callable[[], None]) -> None:
        self._pending.append((self._clock() + delay_seconds, change))
        self.settle()

    def power_w(self, at: float | None = None) -> float:
        """Input power in W (pending changes applied first)."""
        self.settle()
        return super().power_w(at)

    # ---- replies ------------------------------------------------------------------------

    def _wm(self, severity: str, code: int, message: Any) -> Reply:
        """A reply in Whatsminer's own shape: STATUS inline, Msg a string or an object."""
        return {
            "STATUS": severity,
            "When": int(self._wall_clock()),
            "Code": code,
            "Msg": message,
            "Description": "",
        }

    def _wm_summary(self, parameter: str | None) -> Reply:
        reply = self._summary(parameter)
        row = reply["SUMMARY"][0]
        chip = self.chip_temperature_c()
        row.update(
            {
                "HS RT": row["MHS 5s"],
                "Temperature": round(chip - 8, 1),
                "Chip Temp Min": round(chip - 6, 1),
                "Chip Temp Avg": round(chip - 2, 1),
                "Chip Temp Max": round(chip, 1),
                "Env Temp": round(self.physics.ambient_c, 1),
                "Power Mode": "Normal",
                "Power Limit": round(self.device.nominal_power_w * self.power_pct / 100),
                "Power Rate": round(row["Power"] / (row["MHS 5s"] / 1e6), 2)
                if row["MHS 5s"]
                else 0,
                "Factory GHS": round(self.device.nominal_hashrate_hs / 1e9),
            }
        )
        return reply

    def _devdetails(self, _parameter: str | None) -> Reply:
        details = [
            {"DEVDETAILS": board, "Name": "SM", "ID": board, "Driver": "bitmicro", "Model": "M"}
            for board in range(3)
        ]
        return self._ok(69, "Device Details", "DEVDETAILS", details)

    def _get_version(self, _parameter: str | None) -> Reply:
        return self._wm(
            "S", 131, {"api_ver": API_VERSION, "fw_ver": FIRMWARE_VERSION, "platform": "H6OS"}
        )

    def _get_psu(self, _parameter: str | None) -> Reply:
        return self._wm("S", 131, {"name": "P221B", "iin": "11", "vin": "22000", "fan_speed": "0"})

    def _wm_status_reply(self, _parameter: str | None) -> Reply:
        message = {
            self.mineroff_key: "true" if self.asleep else "false",
            "Firmware Version": f"'{FIRMWARE_VERSION}'",  # the quotes are the firmware's
            "power_mode": "",
            "power_pct": str(self.power_pct),
        }
        return self._wm("S", 131, message)

    def _get_token(self, _parameter: str | None) -> Reply:
        now = self._clock()
        self._signs = {
            sign: at for sign, at in self._signs.items() if now - at < self.token_lifetime_seconds
        }
        if len(self._signs) >= self.max_tokens:
            return self._wm("E", 136, "token over max times")
        time_text = f"{int(self._wall_clock()) % 10000:04d}"
        newsalt = "".join(self._rng.choice(_SALT_CHARS) for _ in range(8))
        key = v2_key(self.password, self.salt)
        self._signs[md5_crypt_hash(key + time_text, newsalt)] = now
        self.tokens_issued += 1
        return self._wm("S", 134, {"time": time_text, "salt": self.salt, "newsalt": newsalt})

    # ---- writes -------------------------------------------------------------------------

    def _power_off(self, _request: Reply) -> Reply:
        self._later(self.power_off_delay_seconds, lambda: self.set_asleep(True))
        return self._wm("S", 131, "API command OK")

    def _power_on(self, _request: Reply) -> Reply:
        self._later(self.power_on_delay_seconds, lambda: self.set_asleep(False))
        return self._wm("S", 131, "API command OK")

    def _set_power_pct(self, request: Reply) -> Reply:
        try:
            percent = int(str(request.get("percent")))
        except ValueError:
            return self._wm("E", 132, "command error")
        if not 0 <= percent <= 100:
            return self._wm("E", 132, "command error")

        def land() -> None:
            self.power_pct = percent
            self.set_power_level(percent / 100)

        self._later(self.power_pct_delay_seconds, land)
        return self._wm("S", 131, "API command OK")

    def _update_pools(self, request: Reply) -> Reply:
        entries = [
            Pool(f"p{n}", str(request.get(f"pool{n}")), str(request.get(f"worker{n}", "")))
            for n in (1, 2, 3)
            if request.get(f"pool{n}")
        ]
        if not entries:
            return self._wm("E", 132, "command error")
        self.replace_pools(entries)
        return self._wm("S", 131, "API command OK")

    # ---- request handling ---------------------------------------------------------------

    def _aes_key(self) -> bytes:
        return v2_aes_key(v2_key(self.password, self.salt))

    def _decrypt(self, request: Reply) -> Reply | None:
        data = request.get("data")
        try:
            inner = json.loads(v2_decrypt(self._aes_key(), data)) if isinstance(data, str) else None
        except ValueError:
            return None
        return inner if isinstance(inner, dict) else None

    def _encrypted(self, request: Reply) -> Reply:
        inner = self._decrypt(request)
        if inner is None:
            return self._wm("E", 23, "json cmd err")
        issued = self._signs.get(str(inner.get("token")))
        if issued is None or self._clock() - issued >= self.token_lifetime_seconds:
            return self._wm("E", 135, "check token err")
        command = str(inner.get("cmd", ""))
        self.command_counts[command] += 1
        write = self._writes.get(command)
        if write is not None:
            reply = (
                write(inner) if self.write_enabled else self._wm("E", 45, "can't access write cmd")
            )
        elif command in self._handlers:
            reply = self._handlers[command](None)
        else:
            reply = self._wm("E", 14, "invalid cmd")
        return {"enc": v2_encrypt(self._aes_key(), json.dumps(reply))}

    def handle_request(self, raw: bytes) -> Reply:
        """Answer one request: plain reads (``cmd`` or ``command``) or an encrypted envelope."""
        self.settle()
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._wm("E", 23, "invalid JSON message")
        if not isinstance(request, dict):
            return self._wm("E", 23, "invalid JSON message")
        if request.get("enc") == 1:
            return self._encrypted(request)
        command = request.get("cmd", request.get("command"))
        if not isinstance(command, str) or not command:
            return self._wm("E", 14, "invalid API command or data")
        if command in self._writes:
            self.command_counts[command] += 1
            return self._wm("E", 45, "can't access write cmd")
        parameter = request.get("parameter", request.get("param"))
        return self.handle(command, None if parameter is None else str(parameter))

    def fault_for(self, request: bytes) -> Fault | None:
        """Faults by command name, encrypted commands included."""
        if self.fault is None or self.fault_commands is None:
            return self.fault
        try:
            parsed = json.loads(request)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if isinstance(parsed, dict) and parsed.get("enc") == 1:
            parsed = self._decrypt(parsed) or {}
        command = parsed.get("cmd", parsed.get("command", "")) if isinstance(parsed, dict) else ""
        return self.fault if str(command).split("+")[0] in self.fault_commands else None


def simulate(
    device: Device, pools: Sequence[Pool], *, companion_port: int = 0, **kwargs: Any
) -> tuple[SimMiner, SimServer | None]:
    """A Whatsminer: API v2 on the site's port, API v3 on a free port (``miner.v3.port``)."""
    return SimWhatsminer(device, pools, **kwargs), None
