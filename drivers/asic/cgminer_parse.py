"""Parsing of cgminer-family replies into numbers, pools and modes (pure functions).

Where each Sample field comes from:

    hash rate    SUMMARY[0] "MHS 5s", "GHS 5s", "MHS av" or "GHS av" (first present; to H/s)
    power        POWER[0] "Watts" (LuxOS), else SUMMARY[0] "Power" (Whatsminer), else a
                 "Power" in STATS, else STATS "total_power" (Hiveon), else the sum of the
                 per-chain "chain_consumptionN" (VNish) or "chain_powerN" (Hiveon);
                 None when the firmware reports none (stock bmminer: its web stats.cgi
                 "watt" is read by the antminer driver)
    temperature  the hottest chip sensor: STATS "temp_chipN" ("60-58-73-74" strings or
                 numbers), else bmminer's "temp2_N"; None when the firmware reports none
    pool         the POOLS entry with "Stratum Active", else the best-priority live one
    pools_alive  every POOLS entry not "Disabled": alive when its Status is "Alive"
                 (VNish's "DevFee" entry, the firmware's fee pool, is no pool of the site)
    asleep       CONFIG[0] "CurtailMode" == "Sleep" (LuxOS); firmware without the field
                 is read as awake
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Reply = dict[str, Any]

HASHRATE_FIELDS = (("MHS 5s", 1e6), ("GHS 5s", 1e9), ("MHS av", 1e6), ("GHS av", 1e9))
DEVFEE_URL = "DevFee"  # VNish lists its fee pool with this URL and user


def section(reply: Mapping[str, Any], name: str) -> Reply | None:
    """Return one command's reply from a joined reply (unwrapping cgminer's one-element list)."""
    value = reply.get(name)
    if isinstance(value, list) and value:
        value = value[0]
    return value if isinstance(value, dict) else None


def rows(reply: Mapping[str, Any] | None, key: str) -> list[Reply]:
    """Return the dict rows under ``key`` (SUMMARY, POOLS, STATS, ...), [] when absent."""
    value = reply.get(key) if reply is not None else None
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    """Return a finite number from an int, float or numeric string ("13,623.31" too); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.replace(",", "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_number(value: Any) -> float | None:
    """A finite number from an int, float or numeric string; None otherwise (public _number)."""
    return _number(value)


def parse_hashrate_hs(summary: Mapping[str, Any]) -> float | None:
    """Return the hash rate in H/s from a SUMMARY row (MHS or GHS fields)."""
    for field, scale in HASHRATE_FIELDS:
        value = _number(summary.get(field))
        if value is not None:
            return value * scale
    return None


def parse_power_w(
    summary: Mapping[str, Any], stats: list[Reply], power: list[Reply]
) -> float | None:
    """Return input power in W from POWER Watts, SUMMARY Power or a STATS Power."""
    candidates = [row.get("Watts") for row in power[:1]] + [summary.get("Power")]
    candidates += [row.get("Power") for row in stats]
    candidates += [row.get("total_power") for row in stats]
    for candidate in candidates:
        value = _number(candidate)
        if value is not None and value >= 0:
            return value
    for prefix in ("chain_consumption", "chain_power"):
        chains = [
            number
            for row in stats
            for key, value in row.items()
            if key.startswith(prefix)
            and key[len(prefix) :].isdigit()
            and (number := _number(value)) is not None
            and number >= 0
        ]
        if chains:
            return sum(chains)
    return None


def parse_chip_temperature_c(stats: list[Reply]) -> float | None:
    """Return the hottest chip sensor in Celsius from STATS rows, ignoring 0 and NaN."""
    for prefix in ("temp_chip", "temp2_"):
        readings: list[float] = []
        for row in stats:
            for key, value in row.items():
                if not key.startswith(prefix) or not key[len(prefix) :].isdigit():
                    continue
                parts = value.split("-") if isinstance(value, str) else [value]
                readings += [v for v in map(_number, parts) if v is not None and v > 0]
        if readings:
            return max(readings)
    return None


@dataclass(frozen=True, slots=True)
class PoolEntry:
    """One row of the miner's pool list."""

    index: int
    url: str
    status: str
    priority: int
    active: bool


def parse_pools(pool_rows: list[Reply]) -> tuple[PoolEntry, ...]:
    """Return the POOLS rows that carry a URL."""
    entries = []
    for position, row in enumerate(pool_rows):
        url = row.get("URL")
        if not isinstance(url, str) or not url or url == DEVFEE_URL:
            continue
        index = _number(row.get("POOL"))
        priority = _number(row.get("Priority"))
        active = row.get("Stratum Active")
        entries.append(
            PoolEntry(
                index=int(index) if index is not None else position,
                url=url,
                status=str(row.get("Status", "")),
                priority=int(priority) if priority is not None else position,
                active=active is True or str(active).lower() in ("true", "y", "yes"),
            )
        )
    return tuple(entries)


def current_pool_url(pools: tuple[PoolEntry, ...]) -> str | None:
    """Return the pool hashing now: Stratum Active, else the best-priority enabled (live first)."""
    active = [p for p in pools if p.active]
    enabled = [p for p in pools if p.status != "Disabled"]
    ranked = sorted(active or enabled, key=lambda p: (p.status != "Alive", p.priority))
    return ranked[0].url if ranked else None


def pools_alive(pools: tuple[PoolEntry, ...]) -> list[tuple[str, bool]]:
    """(URL, alive) for each pool the miner tries (Status "Alive" / anything but "Disabled")."""
    return [(p.url, p.status == "Alive") for p in pools if p.status != "Disabled"]


def parse_curtailed(config_rows: list[Reply]) -> bool:
    """Return True when CONFIG says the hashboards are curtailed to sleep (LuxOS)."""
    mode = config_rows[0].get("CurtailMode") if config_rows else None
    return isinstance(mode, str) and mode.strip().lower() == "sleep"


def same_url(a: str, b: str) -> bool:
    """Compare pool URLs ignoring case, outer space, a trailing slash and a missing scheme."""

    def parts(url: str) -> tuple[str, str]:
        scheme, sep, rest = url.strip().lower().rstrip("/").rpartition("://")
        return (scheme if sep else "", rest)

    (scheme_a, rest_a), (scheme_b, rest_b) = parts(a), parts(b)
    return rest_a == rest_b and (scheme_a == scheme_b or not scheme_a or not scheme_b)
