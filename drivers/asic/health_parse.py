"""Deep health from cgminer-family and Whatsminer replies (pure functions).

Where each Health field comes from:

    boards        STATS "chain_rateN" (GH/s), "chain_acnN" (chips found), "temp_pcbN" /
                  "tempN" (board, hottest sensor), "temp_chipN" / "temp2_N" (chip, hottest
                  sensor), for N up to "miner_count" (bmminer, LuxOS, VNish) or every slot
                  with a reading; Whatsminer DEVS rows: "MHS 5s", "Effective Chips",
                  "Temperature", "Chip Temp Max"
    fans          STATS "fanN" (N up to "fan_num"); Whatsminer SUMMARY "Fan Speed In/Out"
    reject_ratio  SUMMARY "Difficulty Rejected" / ("Difficulty Accepted" + rejected), else
                  share counts "Rejected" / ("Accepted" + "Rejected")
    uptime        SUMMARY "Elapsed" (the mining software's; Whatsminer "Uptime", the system's,
                  only where Elapsed is absent)
    firmware      STATS[0] "BMMiner" / "LUXminer" / "CGMiner" / "BOSer" / "Miner" version, the
                  VNish mark in STATS[0] "Type"; Whatsminer SUMMARY "Firmware Version"
    errors        VNish "chain_faultN" texts; Whatsminer get_error_code codes

Whatsminer API v3 (``whatsminer_v3_health``): boards from ``get.miner.status`` edevs
rows ("hash-average" TH/s, "effective-chips", "chip-temp-max") with the board
temperatures from summary "board-temperature" (one per board, in slot order); fans
summary "fan-speed-in"/"fan-speed-out"; uptime summary "elapsed" (else "bootup-time");
firmware ``get.device.info`` system "fwversion"; errors its "error-code" list
(``{"531": "when", "reason": "Slot1 not found."}`` -> ``531: Slot1 not found.``).  API
v3 reports no share counts, so its reject ratio is unknown.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from drivers.asic.cgminer_parse import parse_number
from scheduler.core.model import MAX_BOARDS, MAX_ERRORS, MAX_FANS, BoardHealth, Health

Row = Mapping[str, Any]

QUOTES = "'\" "
FIRMWARE_KEYS = ("LUXminer", "BOSer", "BMMiner", "CGMiner", "Miner")
_VNISH = re.compile(r"\((vnish [^)]*)\)", re.IGNORECASE)


def _max_sensor(value: Any) -> float | None:
    """The hottest of ``"60-58-73-74"`` or a number, ignoring 0 (no sensor)."""
    if value is None:
        return None
    if isinstance(value, str):  # fast path: plain "a-b-c-d" numbers
        try:
            hottest = max(map(float, value.split("-")))
        except ValueError:
            pass
        else:
            return hottest if 0 < hottest < math.inf else None
    parts = value.split("-") if isinstance(value, str) else [value]
    readings = [v for v in map(parse_number, parts) if v is not None and v > 0]
    return max(readings, default=None)


# The keys of each board slot (bmminer numbers from 1; the S9 generation uses 6..8), built
# once: a dictionary look-up per key is much cheaper than scanning every key of the row.
_SLOTS: tuple[tuple[int, str, str, str, str, str, str], ...] = tuple(
    (
        n,
        f"chain_rate{n}",
        f"chain_acn{n}",
        f"temp_pcb{n}",
        f"temp{n}",
        f"temp_chip{n}",
        f"temp2_{n}",
    )
    for n in range(0, MAX_BOARDS + 1)
)
_DETECT = tuple(key for slot in _SLOTS[:10] for key in (slot[1], slot[2]))
_FAN_KEYS = tuple((n, f"fan{n}") for n in range(1, MAX_FANS + 1))
_FAULT_KEYS = tuple((n, f"chain_fault{n}") for n in range(0, MAX_BOARDS + 1))


def _board_row(stats: Iterable[Row]) -> Row | None:
    """The STATS row with the chains (bmminer style), None when none has them."""
    for row in stats:
        if any(key in row for key in _DETECT):
            return row
    return None


Board = tuple[
    float | None, float | None, float | None, float | None
]  # GH/s, chips, board C, chip C


def _float(value: Any) -> float | None:
    """parse_number with a fast path for plain numbers and numeric strings."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return parse_number(value)
    return number if math.isfinite(number) else None


def stats_board_rows(stats: Iterable[Row]) -> list[Board]:
    """Boards from the STATS row that carries ``chain_*`` keys (bmminer style), as tuples."""
    row = _board_row(stats)
    if row is None:
        return []
    count = parse_number(row.get("miner_count"))
    boards: list[Board] = []
    missing = 0
    for _n, rate_key, acn_key, pcb_key, temp_key, chip_key, temp2_key in _SLOTS:
        if (
            rate_key not in row
            and acn_key not in row
            and chip_key not in row
            and temp2_key not in row
        ):
            missing += 1
            if boards and missing > 2:  # past the last slot
                break
            continue  # no such slot
        missing = 0
        rate = _float(row.get(rate_key))
        chips = _float(row.get(acn_key))
        board = _max_sensor(row.get(pcb_key, row.get(temp_key)))
        chip = _max_sensor(row.get(chip_key, row.get(temp2_key)))
        empty = not rate and not chips and board is None and chip is None
        if empty and (count is None or len(boards) >= count):
            continue  # an empty slot: no board fitted
        boards.append((rate, chips, board, chip))
    return boards


def hottest_chip_c(boards: Sequence[Board]) -> float | None:
    """The hottest chip of parsed boards, None when no board reports one."""
    return max((chip for _rate, _chips, _board, chip in boards if chip is not None), default=None)


def stats_boards(stats: Iterable[Row]) -> list[BoardHealth]:
    """Boards from the STATS row that carries ``chain_*`` keys (bmminer style)."""
    return [
        BoardHealth(
            hashrate_hs=None if rate is None else rate * 1e9,
            chips=None if chips is None else int(chips),
            board_temp_c=board,
            chip_temp_c=chip,
        )
        for rate, chips, board, chip in stats_board_rows(stats)
    ]


def stats_fans(stats: Iterable[Row]) -> list[int]:
    """Fan RPMs ``fanN`` from the STATS row that has them (N up to ``fan_num``)."""
    for row in stats:
        if "fan1" not in row and "fan_num" not in row:
            continue
        count = parse_number(row.get("fan_num"))
        rpms = [
            parse_number(row.get(key))
            for n, key in _FAN_KEYS
            if key in row and (count is None or n <= count)
        ]
        return [int(r) for r in rpms if r is not None and r >= 0]
    return []


def reject_ratio(summary: Row) -> float | None:
    """Rejected share of the work submitted (difficulty-weighted where reported)."""
    for accepted_key, rejected_key in (
        ("Difficulty Accepted", "Difficulty Rejected"),
        ("Accepted", "Rejected"),
    ):
        accepted = parse_number(summary.get(accepted_key))
        rejected = parse_number(summary.get(rejected_key))
        if accepted is not None and rejected is not None and accepted >= 0 and rejected >= 0:
            total = accepted + rejected
            return rejected / total if total > 0 else 0.0
    return None


def stats_firmware(stats: Iterable[Row]) -> str | None:
    """The firmware and version STATS[0] names (``BMMiner 49.0.1.3``, ``VNish 1.2.7``)."""
    first = next(iter(stats), {})
    mark = _VNISH.search(str(first.get("Type") or ""))
    if mark:
        return sys.intern("VNish " + mark.group(1)[6:].strip())
    for key in FIRMWARE_KEYS:
        value = first.get(key)
        if isinstance(value, str | int | float) and str(value):
            text = f"{key} {value}"
            if key == "BMMiner" and first.get("Miner"):  # Bitmain's own build number
                text += f" (stock firmware {first['Miner']})"
            return sys.intern(text[:64])
    return None


def stats_errors(stats: Iterable[Row]) -> list[str]:
    """Board faults VNish reports (``chain_faultN``), as ``board N: text``."""
    errors = [f"board {n}: {row[key]}" for row in stats for n, key in _FAULT_KEYS if row.get(key)]
    return errors[:MAX_ERRORS]


def cgminer_health(
    summary: Row, stats: Sequence[Row], boards: Sequence[Board] | None = None
) -> Health:
    """Health from a cgminer-family SUMMARY row and STATS rows (``boards``: already parsed)."""
    return Health.of_raw(
        stats_board_rows(stats) if boards is None else boards,
        stats_fans(stats),
        reject_ratio=reject_ratio(summary),
        uptime_s=parse_number(summary.get("Elapsed")),
        firmware=stats_firmware(stats),
        errors=stats_errors(stats),
    )


def whatsminer_health(summary: Row, devs: Sequence[Row], errors: Iterable[str] = ()) -> Health:
    """Health from a Whatsminer SUMMARY row, its DEVS rows (one per board) and error codes."""
    boards = [
        BoardHealth(
            hashrate_hs=None if (mhs := parse_number(row.get("MHS 5s"))) is None else mhs * 1e6,
            chips=None
            if (chips := parse_number(row.get("Effective Chips"))) is None
            else int(chips),
            board_temp_c=parse_number(row.get("Temperature")),
            chip_temp_c=parse_number(row.get("Chip Temp Max")),
        )
        for row in devs[:MAX_BOARDS]
    ]
    fans = [parse_number(summary.get(k)) for k in ("Fan Speed In", "Fan Speed Out")]
    firmware = summary.get("Firmware Version")
    uptime = parse_number(summary.get("Elapsed"))  # the mining software's, as cgminer's
    return Health.of(
        boards,
        [int(f) for f in fans if f is not None and f >= 0],
        reject_ratio=reject_ratio(summary),
        uptime_s=uptime if uptime is not None else parse_number(summary.get("Uptime")),
        # real firmware quotes it: "'20210322.22.REL'"
        firmware=sys.intern(f"Whatsminer {firmware.strip(QUOTES)}"[:64])
        if isinstance(firmware, str)
        else None,
        errors=errors,
    )


def _v3_error(entry: Any) -> str | None:
    """``531: Slot1 not found.`` from ``{"531": "2025-03-12 14:52:35", "reason": "..."}``."""
    if not isinstance(entry, Mapping):
        return None
    codes = [str(key) for key in entry if key != "reason"]
    if not codes:
        return None
    reason = entry.get("reason")
    return f"{codes[0]}: {reason}" if isinstance(reason, str) and reason else codes[0]


def whatsminer_v3_health(
    summary: Row, edevs: Sequence[Any], system: Row | None = None, error_codes: Any = ()
) -> Health:
    """Health from API v3 replies: summary and edevs of get.miner.status, get.device.info."""
    temperatures = summary.get("board-temperature")
    board_temps = temperatures if isinstance(temperatures, list) else []
    boards: list[Board] = []
    for position, row in enumerate(edevs[:MAX_BOARDS]):
        if not isinstance(row, Mapping):
            continue
        ths = _float(row.get("hash-average"))
        slot = _float(row.get("slot"))
        index = int(slot) if slot is not None and 0 <= slot < len(board_temps) else position
        boards.append(
            (
                None if ths is None else ths * 1e3,  # TH/s -> GH/s
                _float(row.get("effective-chips")),
                _float(board_temps[index]) if index < len(board_temps) else None,
                _float(row.get("chip-temp-max")),
            )
        )
    fans = [_float(summary.get(key)) for key in ("fan-speed-in", "fan-speed-out")]
    uptime = _float(summary.get("elapsed"))
    firmware = (system or {}).get("fwversion")
    errors = [
        text
        for entry in (error_codes if isinstance(error_codes, list) else [])[:MAX_ERRORS]
        if (text := _v3_error(entry)) is not None
    ]
    return Health.of_raw(
        boards,
        [f for f in fans if f is not None and f >= 0],
        reject_ratio=None,
        uptime_s=uptime if uptime is not None else _float(summary.get("bootup-time")),
        firmware=sys.intern(f"Whatsminer {firmware.strip(QUOTES)}"[:64])
        if isinstance(firmware, str) and firmware.strip(QUOTES)
        else None,
        errors=errors,
    )
