"""Find miners on a subnet: ask every address for cgminer's ``version`` with bounded concurrency.

An address counts as a miner when it answers ``version`` on the API port with a
cgminer-style reply.  The firmware is told apart by the VERSION keys it reports, as each firmware's
registry entry declares them (``LUXminer`` -> luxos, ``BOSer`` or ``BOSminer`` ->
braiins, anything else -> cgminer); a Whatsminer answers ``version`` with its firmware
version in ``Msg`` and names its model in ``devdetails`` (``M60S_VK40``); the model comes from ``Type``
(``Antminer S19j Pro`` -> ``S19j Pro``).  Stock Antminer firmware reports ``BMMiner``
(-> antminer, the driver that reads it over the API and its web interface).  VNish
answers ``version`` with "Invalid command": a miner whose ``version`` fails is asked
``stats``, and a STATS[0] ``Type`` like ``Antminer S21 Pro (Vnish 1.2.7)`` names VNish
(-> vnish), its version and the model.  Short connect timeouts keep a /22 to
seconds; progress is reported through a callback so the CLI can draw it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drivers.asic.cgminer_client import CgminerClient
from drivers.asic.cgminer_parse import rows
from drivers.asic.registry import ASIC_DRIVERS, DEFAULT_DRIVER
from drivers.errors import DriverError, Rejected

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
    entries = ASIC_DRIVERS.entries()
    default = ASIC_DRIVERS.get(DEFAULT_DRIVER)
    named = next(
        (
            entry
            for entry in entries
            if entry is not default and any(key in row for key in entry.version_keys)
        ),
        default,
    )
    model = strip_make(str(row.get("Type") or row.get("Model") or "unknown"))
    keys = [*named.version_keys, *default.version_keys]
    keys += [key for entry in entries for key in entry.version_keys if key not in keys]
    firmware = next((f"{key} {row[key]}" for key in keys if key in row), "unknown")
    if firmware.startswith("BMMiner ") and row.get("Miner"):  # Bitmain's own build number
        firmware += f" (stock firmware {row['Miner']})"
    return FoundMiner(address, port, named.tag, model, firmware)


def whatsminer_firmware(reply: dict[str, object]) -> str | None:
    """``Whatsminer <fw_ver>`` when ``version`` came back in Whatsminer's shape, else None.

    Whatsminer answers ``version`` like ``get_version``: STATUS inline and
    ``Msg`` = ``{"api_ver": ..., "fw_ver": "20230714.15.REL"}``.
    """
    message = reply.get("Msg")
    if isinstance(message, dict) and isinstance(message.get("fw_ver"), str):
        return f"Whatsminer {message['fw_ver']}"
    return None


def strip_make(kind: str) -> str:
    """``Antminer S19j Pro`` -> ``S19j Pro`` (the make prefixes firmware puts before a model)."""
    return next((kind[len(p) :] for p in MODEL_PREFIXES if kind.startswith(p)), kind).strip()


async def devdetails_model(client: CgminerClient, address: str, port: int) -> str:
    """The model ``devdetails`` names (Whatsminer ``M60S_VK40``, BOSer ``Antminer S19j Pro``)."""
    try:
        reply = await client.command(address, port, "devdetails")
    except DriverError:
        return "unknown"
    first = next(iter(rows(reply, "DEVDETAILS")), {})
    return str(first.get("Model") or "unknown").strip()


VNISH_MARK = "(vnish "


def vnish_identity(stats_rows: Iterable[dict[str, object]]) -> tuple[str, str] | None:
    """(model, version) from STATS[0] ``Type`` ``Antminer S21 Pro (Vnish 1.2.7)``; else None."""
    kind = str(next(iter(stats_rows), {}).get("Type") or "")
    head, mark, tail = kind.lower().partition(VNISH_MARK)
    if not mark:
        return None
    model = strip_make(kind[: len(head)].strip())
    version = kind[len(head) + len(mark) :].rstrip(")").strip()
    return model or "unknown", version or tail


async def stats_identity(client: CgminerClient, address: str, port: int) -> FoundMiner | None:
    """A miner named by ``stats`` alone (VNish, whose ``version`` is an invalid command)."""
    try:
        reply = await client.command(address, port, "stats")
    except DriverError:
        return None
    found = vnish_identity(rows(reply, "STATS"))
    if found is None:
        return None
    model, version = found
    return FoundMiner(address, port, "vnish", model, f"VNish {version}")


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
        refused = False
        async with slots:
            try:
                reply = await client.command(address, port, "version")
            except Rejected:  # it answers, but not version (VNish): ask stats
                reply, refused = None, True
            except DriverError:
                reply = None
        if refused:
            named = await stats_identity(client, address, port)
            if named is not None:
                found.append(named)
        elif reply is not None:
            firmware = whatsminer_firmware(reply)
            if firmware is None:
                miner = identify(address, port, rows(reply, "VERSION"))
                if miner.model == "unknown":  # BOSer names the model in devdetails only
                    model = await devdetails_model(client, address, port)
                    miner = dataclasses.replace(miner, model=strip_make(model))
                found.append(miner)
            else:
                model = await devdetails_model(client, address, port)
                found.append(FoundMiner(address, port, "whatsminer", model, firmware))
        done += 1
        if progress is not None:
            progress(done, len(targets), len(found))

    async with asyncio.TaskGroup() as group:
        for address in targets:
            group.create_task(probe(address), name=f"discover[{address}].probe")
    return sorted(found, key=lambda m: ipaddress.ip_address(m.address))
