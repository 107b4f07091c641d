"""``wattmux discover``: scan a subnet and print config entries for the miners found."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from drivers.asic.cgminer_client import CgminerClient
from drivers.asic.cgminer_parse import parse_hashrate_hs, parse_number, parse_power_w, rows
from drivers.asic.discover import FoundMiner, discover, hosts
from drivers.errors import DriverError
from scheduler.core.hardware import lookup


@dataclass(frozen=True, slots=True)
class Measured:
    """What a miner reported when discover asked (for a model the catalog lacks)."""

    hashrate_ths: float | None
    power_w: float | None


async def measure(miner: FoundMiner, timeout_seconds: float) -> Measured:
    """Hash rate and power from the miner's ``summary`` (and ``stats``); None where absent."""
    client = CgminerClient(timeout_seconds=timeout_seconds)
    try:
        summary_rows = rows(await client.command(miner.address, miner.port, "summary"), "SUMMARY")
    except DriverError:
        return Measured(None, None)
    summary = summary_rows[0] if summary_rows else {}
    try:
        stats = rows(await client.command(miner.address, miner.port, "stats"), "STATS")
    except DriverError:
        stats = []
    hashrate = parse_hashrate_hs(summary)
    power = parse_number(summary.get("Power_RT")) or parse_power_w(summary, stats, [])
    return Measured(
        None if not hashrate else round(hashrate / 1e12, 1),
        None if not power else round(power),
    )


def device_entry(miner: FoundMiner, pool: str, measured: Measured | None = None) -> str:
    """One ``[[devices]]`` TOML block to paste into the site config."""
    device_id = "m-" + miner.address.replace(".", "-").replace(":", "-")
    lines = [
        "[[devices]]",
        f'id = "{device_id}"',
        f'address = "{miner.address}"',
        f'pools = ["{pool}"]',
        f'options = {{ driver = "{miner.driver}", port = {miner.port} }}',
    ]
    facts = lookup(miner.model)
    if facts is not None:
        lines.insert(2, f'model = "{facts.name}"')
    elif measured is not None and measured.hashrate_ths and measured.power_w:
        lines[2:2] = [
            f"model = {json.dumps(miner.model)}  # not in the model catalog: figures as measured",
            f"nominal_hashrate_ths = {measured.hashrate_ths:g}  # measured now: check the stock figure",
            f"nominal_power_w = {measured.power_w:g}  # measured now",
        ]
    else:
        lines[2:2] = [
            f'# model = "{miner.model}"  # not in the model catalog: give its stock figures',
            "# nominal_hashrate_ths = ?",
            "# nominal_power_w = ?  # the firmware reports no power",
        ]
    lines.insert(1, f"# {miner.firmware}")
    return "\n".join(lines)


def progress_printer(
    stream: TextIO, clock: Callable[[], float] = time.monotonic
) -> Callable[[int, int, int], None]:
    """A progress callback that redraws one line at most ten times a second."""
    last = [0.0]

    def show(done: int, total: int, found: int) -> None:
        now = clock()
        if done == total or now - last[0] >= 0.1:
            last[0] = now
            end = "\n" if done == total else ""
            stream.write(f"\rscanned {done}/{total} addresses, {found} miners{end}")
            stream.flush()

    return show


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``discover`` on the CLI's sub-command parser."""
    parser = sub.add_parser(
        "discover",
        help="scan a subnet for miners and print config entries to paste",
        description="Asks every address of NETWORK for the cgminer 'version' command.",
    )
    parser.add_argument("network", metavar="NETWORK", help="CIDR to scan, e.g. 10.0.0.0/22")
    parser.add_argument("--port", type=int, default=4028, help="API port (default 4028)")
    parser.add_argument("--concurrency", type=int, default=256, help="parallel probes (256)")
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds per probe (0.5)")
    parser.add_argument("--pool", default="main", help="pool name for the entries (main)")


async def run_discover(
    args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Scan, print progress on ``err`` and entries on ``out``; 0 when any miner answered."""
    try:
        targets = hosts(args.network)
    except ValueError as exc:
        err.write(f"wattmux discover: {exc}\n")
        return 2
    if args.concurrency < 1 or args.timeout <= 0:
        err.write("wattmux discover: --concurrency must be >= 1 and --timeout > 0\n")
        return 2
    started = time.monotonic()
    found = await discover(
        targets,
        port=args.port,
        concurrency=args.concurrency,
        timeout_seconds=args.timeout,
        progress=progress_printer(err),
    )
    err.write(f"{len(found)} miners in {time.monotonic() - started:.1f} s\n")
    measured = {  # a model the catalog lacks: what the miner reports stands in for its figures
        m.address: await measure(m, args.timeout) for m in found if lookup(m.model) is None
    }
    entries = [device_entry(m, args.pool, measured.get(m.address)) for m in found]
    out.write("\n\n".join(entries) + ("\n" if found else ""))
    return 0 if found else 1


def main_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``discover`` arguments alone (tests)."""
    parser = argparse.ArgumentParser(prog="wattmux")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["discover", *argv])
