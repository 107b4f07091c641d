"""Stock Antminer firmware (bmminer) on the simulated miner's cgminer API, as real replies show it.

Shapes follow replies captured from a stock Antminer S19 Pro (BMMiner 1.0.0,
miner 49.0.1.3) and newer stock firmware (S21 XP Hyd., S23 Hyd.):

- every STATUS Description is ``cgminer 1.0.0``; ``version`` has
  ``{"API": "3.1", "BMMiner": "1.0.0", "CompileTime": ..., "Miner": "49.0.1.3",
  "Type": "Antminer S19 Pro"}``;
- ``summary`` has ``GHS 5s`` / ``GHS av`` / ``GHS 30m`` and no ``Power`` (stock firmware
  reports no input power on this API);
- ``stats``: STATS[0] the identity (``BMMiner`` key), STATS[1] the bmminer table:
  ``chain_acnN`` (chips found), ``chain_acsN`` (chip status string), ``chain_rateN``
  (GH/s as a string), ``chain_hwN``, ``fanN``, ``freqN``, ``tempN`` / ``temp2_N``,
  ``temp_pcbN`` / ``temp_chipN`` / ``temp_picN`` (four sensors ``"a-b-c-d"``), unused
  fourth chain zeroed, ``total_rateideal`` and ``rate_unit`` ``GH``;
- ``devs`` one ``BTM_SOC`` row, ``devdetails`` one row, ``pools`` cgminer's rows.

The LuxOS commands (sessions, curtail, profiles, power) are gone; sleep and wake
go through the web interface (drivers/sim/antminer_web.py, digest auth, port 80
of the miner's own address by default).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from drivers.sim.miner import BOARDS, FANS, Reply, SimMiner
from drivers.sim.physics import CHIP_RISE_C

DESCRIPTION = "cgminer 1.0.0"
BMMINER = "1.0.0"
MINER_VERSION = "49.0.1.3"
COMPILE_TIME = "Tue Dec  6 16:12:30 CST 2022"
CHIPS_PER_BOARD = {
    "S19 Pro": 114,
    "S19j Pro": 126,
    "S19k Pro": 77,
    "S19 XP": 110,
    "S21": 108,
    "S21 Pro": 65,
    "S21 XP Hyd.": 160,
    "S23 Hyd.": 84,
}
DEFAULT_CHIPS = 108
FREQUENCY_MHZ = 525


def chips_per_board(model: str) -> int:
    """Chips on one hashboard of ``model`` (a round default for models not listed)."""
    return CHIPS_PER_BOARD.get(model, DEFAULT_CHIPS)


def fan_rpms(miner: SimMiner, now: float) -> list[int]:
    """Fan speeds following the thermal load (the law of the cgminer ``stats`` reply)."""
    load = (miner.chip_temperature_c(now) - miner.physics.ambient_c) / CHIP_RISE_C
    base = round(1500 + 4500 * min(1.0, max(0.0, load)))
    return [base + 30 * fan for fan in range(1, FANS + 1)]


def board_rates_ghs(miner: SimMiner, now: float) -> list[float]:
    """Each board's hash rate in GH/s (the miner's rate split evenly)."""
    return [miner.hashrate_hs(now) / 1e9 / BOARDS] * BOARDS


def pic_sensors(pcb: Sequence[int]) -> list[int]:
    """PIC sensors read about 10 degrees under the PCB sensors (as in the captures)."""
    return [max(0, value - 10) for value in pcb]


def average_ghs(miner: SimMiner, now: float) -> float:
    """Average hash rate since start, in GH/s."""
    elapsed = max(1e-9, now - miner.physics.started_at)
    return miner.physics.hashes(now) / elapsed / 1e9


def miner_id(miner: SimMiner) -> str:
    """A stable 16-hex-digit miner id per device."""
    crc = zlib.crc32(miner.device.id.encode())
    return f"{crc:08x}{zlib.crc32(miner.device.model.encode()):08x}"


def stats_table(miner: SimMiner, now: float, *, miner_version: str) -> Reply:
    """STATS[1] of bmminer-family firmware (stock, LuxOS), four chain slots, the last unused."""
    chips = chips_per_board(miner.device.model)
    rates = board_rates_ghs(miner, now)
    boards = miner.physics.board_temperatures_c(now)
    fans = fan_rpms(miner, now)
    table: Reply = {
        "STATS": 0,
        "ID": "BTM_SOC0",
        "Elapsed": int(max(0.0, now - miner.physics.started_at)),
        "Calls": 0,
        "Wait": 0,
        "Max": 0,
        "Min": 99999999,
        "GHS 5s": round(miner.hashrate_hs(now) / 1e9, 2),
        "GHS av": round(average_ghs(miner, now), 2),
        "rate_30m": round(average_ghs(miner, now), 2),
        "Mode": 2,
        "miner_count": BOARDS,
        "frequency": FREQUENCY_MHZ,
        "fan_num": FANS,
        "temp_num": BOARDS,
        "temp_max": 0,
        "total_acn": chips * BOARDS,
        "total_rateideal": round(miner.device.nominal_hashrate_hs / 1e9, 2),
        "total_freqavg": FREQUENCY_MHZ,
        "total rate": round(miner.hashrate_hs(now) / 1e9, 2),
        "rate_unit": "GH",
        "miner_version": miner_version,
        "miner_id": miner_id(miner),
        "no_matching_work": 0,
    }
    for fan, rpm in enumerate(fans, start=1):
        table[f"fan{fan}"] = rpm
    for slot in range(1, BOARDS + 2):  # a fourth, empty chain slot as real firmware sends
        if slot <= BOARDS:
            chip, pcb = boards[slot - 1]
            table[f"chain_acn{slot}"] = chips
            table[f"chain_acs{slot}"] = " " + " ".join(["ooo"] * (chips // 3))
            table[f"chain_hw{slot}"] = 0
            table[f"chain_rate{slot}"] = f"{rates[slot - 1]:.2f}"
            table[f"freq{slot}"] = FREQUENCY_MHZ
            table[f"temp{slot}"] = max(pcb)
            table[f"temp2_{slot}"] = max(chip)
            table[f"temp_pcb{slot}"] = "-".join(str(v) for v in pcb)
            table[f"temp_chip{slot}"] = "-".join(str(v) for v in chip)
            table[f"temp_pic{slot}"] = "-".join(str(v) for v in pic_sensors(pcb))
        else:
            table[f"chain_acn{slot}"] = 0
            table[f"chain_acs{slot}"] = ""
            table[f"chain_hw{slot}"] = 0
            table[f"chain_rate{slot}"] = ""
            table[f"freq{slot}"] = 0
            for sensor in ("temp_pcb", "temp_chip", "temp_pic"):
                table[f"{sensor}{slot}"] = "0-0-0-0"
    return table


def summary_row(miner: SimMiner, now: float) -> Reply:
    """SUMMARY[0] with bmminer's GH/s fields and no Power."""
    accepted = int(miner.physics.hashes(now) / (65536 * 2**32))
    return {
        "Elapsed": int(max(0.0, now - miner.physics.started_at)),
        "GHS 5s": round(miner.hashrate_hs(now) / 1e9, 2),
        "GHS av": round(average_ghs(miner, now), 2),
        "GHS 30m": round(average_ghs(miner, now), 2),
        "Found Blocks": 0,
        "Getwork": 0,
        "Accepted": accepted,
        "Rejected": accepted // 500,
        "Hardware Errors": 0,
        "Utility": 0.0,
        "Discarded": 0,
        "Stale": 0,
        "Get Failures": 0,
        "Local Work": 0,
        "Remote Failures": 0,
        "Network Blocks": 0,
        "Total MH": round(miner.physics.hashes(now) / 1e6, 0),
        "Work Utility": 0.0,
        "Difficulty Accepted": float(accepted * 65536),
        "Difficulty Rejected": float(accepted // 500 * 65536),
        "Difficulty Stale": 0.0,
        "Best Share": 0,
        "Device Hardware%": 0.0,
        "Device Rejected%": 0.0,
        "Pool Rejected%": 0.0,
        "Pool Stale%": 0.0,
        "Last getwork": int(miner._wall_clock()),
    }


def play_bmminer(miner: SimMiner) -> None:
    """Make ``miner``'s cgminer API answer as stock Antminer firmware does."""
    miner.become_stock_bmminer()
    miner.description = DESCRIPTION
    model = f"Antminer {miner.device.model}"
    identity = {
        "BMMiner": BMMINER,
        "CompileTime": COMPILE_TIME,
        "Miner": MINER_VERSION,
        "Type": model,
    }

    def version(_parameter: str | None) -> Reply:
        return miner._ok(22, "CGMiner versions", "VERSION", [{"API": "3.1", **identity}])

    def summary(_parameter: str | None) -> Reply:
        return miner._ok(11, "Summary", "SUMMARY", [summary_row(miner, miner._clock())])

    def stats(_parameter: str | None) -> Reply:
        table = stats_table(miner, miner._clock(), miner_version=MINER_VERSION)
        return miner._ok(70, "CGMiner stats", "STATS", [dict(identity), table])

    def devs(_parameter: str | None) -> Reply:
        row = dict(summary_row(miner, miner._clock()))
        device = {
            "ASC": 0,
            "Name": "BTM_SOC",
            "ID": 0,
            "Enabled": "Y",
            "Status": "Alive",
            "Tenperature": 0.0,  # sic: stock bmminer's spelling
            "MHS 5s": 0.0,
            "MHS av": 0.0,
            "Accepted": row["Accepted"],
            "Rejected": row["Rejected"],
            "Hardware Errors": 0,
            "Device Elapsed": row["Elapsed"],
        }
        return miner._ok(9, "1 ASC(s)", "DEVS", [device])

    def devdetails(_parameter: str | None) -> Reply:
        row = {
            "DEVDETAILS": 0,
            "Name": "BTM_SOC",
            "ID": 0,
            "Driver": "bitmain_soc",
            "Kernel": "",
            "Model": "",
            "Device Path": "",
        }
        return miner._ok(69, "Device Details", "DEVDETAILS", [row])

    miner._handlers.update(
        {
            "version": version,
            "summary": summary,
            "stats": stats,
            "devs": devs,
            "devdetails": devdetails,
        }
    )
