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
from drivers.sim.miner import BOARDS, Reply, SimMiner, SimServer
from drivers.sim.physics import CHIP_RISE_C
from drivers.sim.tcp import Fault
from drivers.sim.whatsminer_v3 import SimWhatsminerV3
from scheduler.core.model import Device, Pool

FIRMWARE_VERSION = "20230714.15.REL"
API_VERSION = "2.0.5"
V3_PORT = 4433
JOINABLE = frozenset({"summary", "pools", "devs", "devdetails", "stats", "version"})
_SALT_CHARS = string.ascii_letters + string.digits
# The hardware variant real firmware appends to the family ("M60S_VK40"), per family.
VARIANTS = {"M30S++": "VH60", "M30S+": "VF20", "M30S": "VE40", "M50S": "VH50", "M50": "VH50"}
DEFAULT_VARIANT = "VK40"
CHIPS_PER_BOARD = 105


def model_string(model: str) -> str:
    """The model as real firmware reports it: family and variant (``M60S`` -> ``M60S_VK40``)."""
    name = model.removeprefix("Whatsminer").strip()
    if "_" in name:
        return name
    family = next((f for f in sorted(VARIANTS, key=len, reverse=True) if name == f), None)
    return f"{name}_{VARIANTS[family] if family else DEFAULT_VARIANT}"


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
            "version": self._get_version,
            "stats": self._wm_stats,
            "devs": self._devs,
            "get_error_code": self._get_error_code,
            "get_miner_info": self._get_miner_info,
        }
        self.model_string = model_string(device.model)
        self.led_auto = True
        self.error_codes: list[str] = []  # what get_error_code reports (tests set codes)
        self.v3 = SimWhatsminerV3(self, port=v3_port, password=v3_password)
        self._writes: dict[str, Callable[[Reply], Reply]] = {
            "power_off": self._power_off,
            "power_on": self._power_on,
            "set_power_pct": self._set_power_pct,
            "update_pools": self._update_pools,
            "adjust_power_limit": self._adjust_power_limit,
            "open_write_api": self._open_write_api,
            "set_led": self._set_led,
            "reboot": self._reboot,
            "reset_led": self._reset_led,
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
        """SUMMARY with every key of real firmware's reply (values from the simulation)."""
        reply = self._summary(parameter)
        row = reply["SUMMARY"][0]
        chip = self.chip_temperature_c()
        power = row["Power"]
        mhs = row["MHS 5s"]
        fan_in, fan_out = self._fans()
        row.update(
            {
                "MHS 1m": mhs,
                "MHS 5m": mhs,
                "MHS 15m": row["MHS av"],
                "HS RT": mhs,
                "Temperature": round(chip - 8, 1),
                "freq_avg": 648,
                "Fan Speed In": fan_in,
                "Fan Speed Out": fan_out,
                "Voltage": 1180,
                "Power": power,
                "Power_RT": power,
                "Power Current": round(power / 13.1),
                "Power Fanspeed": 9060,
                "Power Limit": round(self.device.nominal_power_w * self.power_pct / 100),
                "Power Mode": "Normal",
                "Power Rate": round(power / (mhs / 1e6), 2) if mhs else 0,
                "Chip Temp Min": round(chip - 6, 1),
                "Chip Temp Max": round(chip, 1),
                "Chip Temp Avg": round(chip - 2, 1),
                "Chip Data": "HP5A01-19101436   BINV04-192101D",
                "Env Temp": round(self.physics.ambient_c, 1),
                "Debug": "",
                "Btminer Fast Boot": "disable",
                "Upfreq Complete": 1,
                "Target Freq": 625,
                "Target MHS": round(self.device.nominal_hashrate_hs / 1e6),
                "Factory GHS": round(self.device.nominal_hashrate_hs / 1e9),
                "Firmware Version": f"'{FIRMWARE_VERSION}'",
                "CB Platform": "H616",
                "CB Version": "V10",
                "MAC": self._mac(),
                "Uptime": row["Elapsed"] + 638,
                "Security Mode": 0,
                "Liquid Cooling": False,
                "Hash Stable": True,
                "Hash Stable Cost Seconds": 1538,
                "Hash Deviation%": 0.1061,
                "Error Code Count": len(self.error_codes),
                "Factory Error Code Count": 0,
                "Utility": 13.82,
                "Work Utility": 3697.27,
                "Getworks": 950,
                "Discarded": 0,
                "Stale": 0,
                "Get Failures": 0,
                "Local Work": 0,
                "Remote Failures": 0,
                "Network Blocks": 20,
                "Total MH": round(row["MHS av"] * row["Elapsed"]),
                "Difficulty Accepted": float(row["Accepted"] * 65536),
                "Difficulty Rejected": float(row["Rejected"] * 65536),
                "Difficulty Stale": 0.0,
                "Best Share": 41127493,
                "Device Hardware%": 0.011,
                "Device Rejected%": 0.0,
                "Pool Rejected%": 0.0,
                "Pool Stale%": 0.0,
                "Last getwork": 0,
            }
        )
        for entry in reply["STATUS"]:
            entry["Description"] = "cgminer 4.9.2"
        return reply

    def _mac(self) -> str:
        crc = zlib.crc32(self.device.id.encode())
        return "C4:08:28:" + ":".join(f"{(crc >> shift) & 0xFF:02X}" for shift in (16, 8, 0))

    def _fans(self) -> tuple[int, int]:
        load = (self.chip_temperature_c() - self.physics.ambient_c) / CHIP_RISE_C
        rpm = round(2000 + 4500 * min(1.0, max(0.0, load)))
        return rpm, rpm + 30

    def _boards(self) -> list[Reply]:
        now = self._clock()
        mhs = self.hashrate_hs(now) / 1e6 / BOARDS
        fan_in, fan_out = self._fans()
        rows = []
        for board, (chip, pcb) in enumerate(self.physics.board_temperatures_c(now)):
            rows.append(
                {
                    "ASC": board,
                    "Name": "SM",
                    "ID": board,
                    "Slot": board,
                    "Enabled": "Y",
                    "Status": "Alive",
                    "Temperature": float(max(pcb)),
                    "Chip Frequency": 650,
                    "Fan Speed In": fan_in,
                    "Fan Speed Out": fan_out,
                    "MHS av": round(mhs, 2),
                    "MHS 5s": round(mhs, 2),
                    "MHS 1m": round(mhs, 2),
                    "MHS 5m": round(mhs, 2),
                    "MHS 15m": round(mhs, 2),
                    "Accepted": 0,
                    "Rejected": 0,
                    "Hardware Errors": 0,
                    "Upfreq Complete": 1,
                    "Effective Chips": CHIPS_PER_BOARD,
                    "PCB SN": f"H5M14S{zlib.crc32(self.device.id.encode()) % 10**8:08d}{board}",
                    "Chip Temp Min": float(min(chip)),
                    "Chip Temp Max": float(max(chip)),
                    "Chip Temp Avg": round(sum(chip) / len(chip), 2),
                    "Device Elapsed": int(max(0.0, now - self.physics.started_at)),
                }
            )
        return rows

    def _devs(self, _parameter: str | None) -> Reply:
        reply = self._ok(9, f"{BOARDS} ASC(s)", "DEVS", self._boards())
        for entry in reply["STATUS"]:
            entry["Description"] = "cgminer 4.9.2"
        return reply

    def _wm_stats(self, _parameter: str | None) -> Reply:
        rows = [
            {"STATS": board["ID"], "ID": f"SM{board['ID']}", "Elapsed": board["Device Elapsed"]}
            for board in self._boards()
        ]
        return self._ok(70, "CGMiner stats", "STATS", rows)

    def _get_error_code(self, _parameter: str | None) -> Reply:
        # Real shape: one {code: "when"} object per error.
        codes = [{code: "2026-01-01 00:00:00"} for code in self.error_codes]
        return self._wm("S", 131, {"error_code": codes})

    def _get_miner_info(self, _parameter: str | None) -> Reply:
        info = {
            "ip": self.address,
            "proto": "dhcp",
            "netmask": "255.0.0.0",
            "gateway": "127.0.0.1",
            "dns": "127.0.0.1",
            "hostname": f"WhatsMiner{self.device.id}",
            "mac": self._mac(),
            "ledstat": "auto" if self.led_auto else "manual",
            "minersn": f"HTM3{zlib.crc32(self.device.id.encode()):010d}",
        }
        return self._wm("S", 131, info)

    def _devdetails(self, _parameter: str | None) -> Reply:
        details = [
            {
                "DEVDETAILS": board,
                "Name": "SM",
                "ID": board,
                "Driver": "bitmicro",
                "Kernel": "",
                "Model": self.model_string,
            }
            for board in range(BOARDS)
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

    def _pools_reply(self, parameter: str | None) -> Reply:
        """POOLS numbered from 1, as Whatsminer firmware numbers them."""
        reply = super()._pools_reply(parameter)
        for row in reply["POOLS"]:
            row["POOL"] += 1
        return reply

    def _adjust_power_limit(self, request: Reply) -> Reply:
        try:
            watts = int(str(request.get("power_limit")))
        except ValueError:
            return self._wm("E", 132, "command error")
        if not 0 < watts <= 99999:
            return self._wm("E", 132, "command error")
        percent = max(1, min(100, round(100 * watts / self.device.nominal_power_w)))

        def land() -> None:
            self.power_pct = percent
            self.set_power_level(percent / 100)

        self._later(self.power_pct_delay_seconds, land)
        return self._wm("S", 131, "API command OK")

    def _open_write_api(self, _request: Reply) -> Reply:
        self.write_enabled = True
        return self._wm("S", 131, "API command OK")

    def _set_led(self, _request: Reply) -> Reply:
        self.led_auto = False
        return self._wm("S", 131, "API command OK")

    def _reboot(self, _request: Reply) -> Reply:
        self.reboot()
        return self._wm("S", 131, "API command OK")

    def _reset_led(self, _request: Reply) -> Reply:
        self.led_auto = True
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
        command = str(inner.get("cmd", inner.get("command", "")))
        self.command_counts[command] += 1
        write = self._writes.get(command)
        if write is not None:
            allowed = self.write_enabled or command == "open_write_api"
            reply = write(inner) if allowed else self._wm("E", 45, "can't access write cmd")
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

    def handle(self, command: str, parameter: str | None = None) -> Reply:
        """One command, or reads joined with ``+`` (Whatsminer joins devs and devdetails too)."""
        names = [name for name in command.split("+") if name]
        if "+" not in command or not names:
            return super().handle(command, parameter)
        self.command_counts[command] += 1
        joined: Reply = {}
        for name in dict.fromkeys(names):
            handler = self._handlers.get(name)
            if name in JOINABLE and handler is not None:
                joined[name] = [handler(None)]
            else:
                joined[name] = [self._wm("E", 14, "invalid cmd")]
        joined["id"] = 1
        return joined

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
    """A Whatsminer: API v2 on the site's port, API v3 on 4433 of the miner's own address.

    With the site's port 0 (free ports, several miners per address) API v3 takes a free
    port too (``miner.v3.port``).
    """
    v3_port = V3_PORT if kwargs.get("port", 4028) else 0
    return SimWhatsminer(device, pools, v3_port=kwargs.pop("v3_port", v3_port), **kwargs), None
