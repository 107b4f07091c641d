"""LuxOS on a simulated miner: the cgminer API as LuxOS answers it.

``play_luxos`` makes a simulated miner answer as LuxOS (LUXminer 2025.4.8, captured
from an Antminer S19k Pro) does on the cgminer API: STATUS Description
``LUXminer <build>``; ``version`` with the ``LUXminer`` key; ``summary`` in GH/s
without ``Power`` (power is the ``power`` command's POWER[0].Watts); ``stats`` in
bmminer's table; ``config`` with Model, MACAddr, Profile, CurtailMode, IsAtmEnabled,
RedLed ...; ``fans``, ``temps``, ``tempctrl``, ``groups``, ``devs``, ``devdetails``,
``events``, ``ledset``; pools carry their ``GROUP``.

Sessions, curtail, profiles and ATM are drivers/sim/luxos.py's (every simulated
miner has them); this module adds LuxOS's reply shapes and commands.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from drivers.sim import bmminer
from drivers.sim.luxos import (
    LUXMINER_BUILD,
    LUXMINER_COMPILE_TIME,
    profile_name,
)
from drivers.sim.miner import BOARDS, Reply, SimMiner, SimServer
from scheduler.core.model import Device, Pool


def play_luxos(miner: SimMiner) -> None:
    """Make ``miner``'s cgminer API answer as LuxOS does (the session commands stay)."""
    miner.description = f"LUXminer {LUXMINER_BUILD}"
    miner.hashrate_unit = "GHS"
    miner.reports_power = False  # LuxOS: power is the ``power`` command, not a SUMMARY field
    luxos = miner.luxos
    model = f"Antminer {miner.device.model}"
    identity = {
        "CompileTime": LUXMINER_COMPILE_TIME,
        "Miner": LUXMINER_BUILD.split("-")[0],
        "Type": model,
    }

    def version(_parameter: str | None) -> Reply:
        row = {"API": "3.7", "LUXminer": LUXMINER_BUILD, **identity}
        return miner._ok(22, "LUXminer versions", "VERSION", [row])

    def summary(_parameter: str | None) -> Reply:
        now = miner._clock()
        row = bmminer.summary_row(miner, now)
        for window in ("1m", "5m", "15m", "24h"):
            row[f"GHS {window}"] = row["GHS av"]
        return miner._ok(11, "Summary", "SUMMARY", [row])

    def stats(_parameter: str | None) -> Reply:
        table = bmminer.stats_table(miner, miner._clock(), miner_version=identity["Miner"])
        return miner._ok(70, "LUXminer stats", "STATS", [dict(identity), table])

    def config(_parameter: str | None) -> Reply:
        asleep = miner.asleep
        row = {
            "ASC Count": BOARDS,
            "Cooling": "Air",
            "CurtailMode": "Sleep" if asleep else "None",
            "FeeStatus": "Ok",
            "GreenLed": "auto",
            "Hostname": miner.device.id,
            "IsAtmEnabled": luxos.atm_enabled,
            "IsPowerSupplyOn": not asleep,
            "IsTuning": False,
            "MACAddr": mac_address(miner),
            "Model": model,
            "NameplateTHS": round(miner.device.nominal_hashrate_hs / 1e12, 1),
            "OS": "LuxOS",
            "PGA Count": 0,
            "Pool Count": len(miner.handle("pools")["POOLS"]),
            "Profile": profile_name(luxos.step),
            "ProfileStep": str(luxos.step),
            "RedLed": luxos.red_led,
            "SerialNumber": f"SIM{zlib.crc32(miner.device.id.encode()):08X}",
            "Strategy": "Failover",
            "SystemStatus": "Sleep" if asleep else "Normal",
        }
        return miner._ok(33, "LUXminer config", "CONFIG", [row])

    def fans(_parameter: str | None) -> Reply:
        rpms = bmminer.fan_rpms(miner, miner._clock())
        rows = [
            {"FAN": f"FAN{index + 1}", "ID": index, "RPM": rpm, "Speed": round(rpm / 65)}
            for index, rpm in enumerate(rpms)
        ]
        reply = miner._ok(202, f"{len(rows)} Fan(s)", "FANS", rows)
        reply["FANCTRL"] = [{"MinFans": 3, "PowerOffSpeed": 20}]
        return reply

    def temps(_parameter: str | None) -> Reply:
        boards = miner.physics.board_temperatures_c(miner._clock())
        rows = [
            {
                "ID": index,
                "TEMP": index,
                "TopLeft": float(chip[0]),
                "TopRight": float(chip[1]),
                "BottomLeft": float(chip[2]),
                "BottomRight": float(chip[3]),
            }
            for index, (chip, _pcb) in enumerate(boards)
        ]
        return miner._ok(201, f"{len(rows)} Temp(s)", "TEMPS", rows)

    def tempctrl(_parameter: str | None) -> Reply:
        row = {"Mode": "Auto", "Target": 70, "Hot": 85, "Dangerous": 95}
        return miner._ok(203, "Temperature control", "TEMPCTRL", [row])

    def groups(_parameter: str | None) -> Reply:
        row = {"GROUP": 0, "Name": "Default", "Quota": 1}
        return miner._ok(7, "1 Group(s)", "GROUPS", [row])

    def pools(parameter: str | None) -> Reply:
        reply = miner._pools_reply(parameter)
        for row in reply["POOLS"]:
            row["GROUP"] = 0
        return reply

    def devs(_parameter: str | None) -> Reply:
        now = miner._clock()
        rows = [
            {
                "ASC": index,
                "Name": "BTM_SOC",
                "ID": index,
                "Enabled": "Y",
                "Status": "Alive",
                "Temperature": float(max(pcb)),
                "MHS 5s": round(rate * 1e3, 2),
                "MHS av": round(rate * 1e3, 2),
            }
            for index, (rate, (_chip, pcb)) in enumerate(
                zip(
                    bmminer.board_rates_ghs(miner, now),
                    miner.physics.board_temperatures_c(now),
                    strict=True,
                )
            )
        ]
        return miner._ok(9, f"{len(rows)} ASC(s)", "DEVS", rows)

    def devdetails(_parameter: str | None) -> Reply:
        rows = [
            {
                "DEVDETAILS": index,
                "Name": "BTM_SOC",
                "ID": index,
                "Driver": "bitmain",
                "Kernel": "",
                "Model": model,
                "Chips": bmminer.chips_per_board(miner.device.model),
            }
            for index in range(BOARDS)
        ]
        return miner._ok(69, "Device Details", "DEVDETAILS", rows)

    def events(_parameter: str | None) -> Reply:
        return miner._ok(357, "Miner Events", "EVENTS", [])

    miner._handlers.update(
        {
            "version": version,
            "summary": summary,
            "stats": stats,
            "config": config,
            "fans": fans,
            "temps": temps,
            "tempctrl": tempctrl,
            "groups": groups,
            "pools": pools,
            "devs": devs,
            "devdetails": devdetails,
            "events": events,
            "ledset": luxos.ledset,
        }
    )


def mac_address(miner: SimMiner) -> str:
    """A stable locally administered MAC per device id."""
    crc = zlib.crc32(miner.device.id.encode())
    return "02:" + ":".join(f"{(crc >> shift) & 0xFF:02x}" for shift in (24, 16, 8, 0)) + ":4c"


def simulate(
    device: Device, pools: Sequence[Pool], *, companion_port: int = 0, **kwargs: Any
) -> tuple[SimMiner, SimServer | None]:
    """LuxOS: the cgminer API with LuxOS's commands and reply shapes; no second server."""
    miner = SimMiner(device, pools, **kwargs)
    play_luxos(miner)
    return miner, None
