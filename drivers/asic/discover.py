"""Find miners on a subnet: ask every address for cgminer's ``version`` with bounded concurrency.

An address counts as a miner when it answers ``version`` on the API port with a
cgminer-style reply.  The firmware is told apart by the VERSION keys it reports
(``LUXminer`` -> luxos, ``BOSminer`` -> braiins, anything else -> cgminer); the model comes from ``Type``
(``Antminer S19j Pro`` -> ``S19j Pro``).  Short connect timeouts keep a /22 to
seconds; progress is reported through a callback so the CLI can draw it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.asic.cgminer_client import CgminerClient
from drivers.asic.cgminer_parse import rows
from drivers.errors import DriverError

MODEL_PREFIXES = ("Antminer ", "AntMiner ", "Whatsminer ", "WhatsMiner ")
MAX_HOSTS = 65536


@dataclass(frozen=True, slots=True)
class FoundMiner:
    """One miner that answered: where, which firmware driver, which model it reports."""

    address: str
    port: int
    driver: str
    model: str
    firmware: str


def hosts(network: str) -> list[str]:
    """The host addresses of a CIDR (a /32 is itself); ValueError when it is no network."""
    parsed = ipaddress.ip_network(network, strict=False)
    if parsed.num_addresses > MAX_HOSTS:
        raise ValueError(f"{network}: {parsed.num_addresses} addresses; scan at most a /16")
    found = [str(h) for h in parsed.hosts()]
    return found or [str(parsed.network_address)]


def identify(address: str, port: int, version_rows: Iterable[dict[str, object]]) -> FoundMiner:
    """Name the driver and model from VERSION rows."""
    row = next(iter(version_rows), {})
    driver = "luxos" if "LUXminer" in row else "braiins" if "BOSminer" in row else "cgminer"
    kind = str(row.get("Type") or row.get("Model") or "unknown")
    model = next((kind[len(p) :] for p in MODEL_PREFIXES if kind.startswith(p)), kind)
    firmware = next(
        (
            f"{key} {row[key]}"
            for key in ("LUXminer", "BMMiner", "CGMiner", "BOSminer")
            if key in row
        ),
        "unknown",
    )
    return FoundMiner(address, port, driver, model.strip(), firmware)


async def discover(
    addresses: Iterable[str],
    *,
    port: int = 4028,
    concurrency: int = 256,
    timeout_seconds: float = 0.5,
    progress: Callable[[int, int, int], None] | None = None,
) -> list[FoundMiner]:
    """Ask every address for ``version``; return the miners that answered, in address order."""
    targets = list(addresses)
    client = CgminerClient(timeout_seconds=timeout_seconds)
    slots = asyncio.Semaphore(concurrency)
    found: list[FoundMiner] = []
    done = 0

    async def probe(address: str) -> None:
        nonlocal done
        async with slots:
            try:
                reply = await client.command(address, port, "version")
            except DriverError:
                reply = None
        if reply is not None:
            found.append(identify(address, port, rows(reply, "VERSION")))
        done += 1
        if progress is not None:
            progress(done, len(targets), len(found))

    async with asyncio.TaskGroup() as group:
        for address in targets:
            group.create_task(probe(address), name=f"discover[{address}].probe")
    return sorted(found, key=lambda m: ipaddress.ip_address(m.address))
