"""Serve misbehaving cgminer-API miners in their own process (benchmarks).

``python bench/hostile_server.py --first-address 127.32.0.1 --count 12 --port 4028``
starts ``count`` hostile miners on consecutive loopback addresses, cycling
through the behaviours of drivers/sim/hostile.py (``--behaviours a,b`` picks
some), prints ``{"ready": count}`` and serves until stdin closes.  The
benchmarks start it (and the good miners' simulator) with ``start_process``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.sim.hostile import Behaviour, HostileMiner

POOL_URL = "stratum+tcp://main.pool.invalid:3333"
ROOT = Path(__file__).resolve().parents[1]


async def start_process(*argv: str, quiet: bool = False) -> asyncio.subprocess.Process:
    """Start a server process that prints one ``{"ready": n}`` line; stop it by closing stdin."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
        stderr=asyncio.subprocess.DEVNULL if quiet else None,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 600)
    if not line or "ready" not in json.loads(line):
        raise RuntimeError(f"{argv[1:3]} did not start: {line!r}")
    return process


async def start_good(first: str, count: int, port: int = 4028) -> asyncio.subprocess.Process:
    """Good simulated miners (python -m drivers.sim) in their own process."""
    return await start_process(
        sys.executable, "-m", "drivers.sim", "--first-address", first, "--count", str(count),
        "--port", str(port), "--pool-url", POOL_URL,
    )  # fmt: skip


async def start_hostile(
    first: str, count: int, port: int = 4028, kinds: str | None = None
) -> asyncio.subprocess.Process:
    """Hostile miners (this module) in their own process."""
    argv = [sys.executable, __file__, "--first-address", first, "--count", str(count)]
    argv += ["--port", str(port)] + (["--behaviours", kinds] if kinds else [])
    return await start_process(*argv, quiet=True)  # its dropped connections are not news


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """Close its stdin and wait for it (killed after 10 s)."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


def addresses(first: str, count: int) -> list[str]:
    start = ipaddress.IPv4Address(first)
    return [str(start + i) for i in range(count)]


def behaviours(names: str | None) -> list[Behaviour]:
    return [Behaviour(n) for n in names.split(",")] if names else list(Behaviour)


async def serve(args: argparse.Namespace) -> None:
    kinds = behaviours(args.behaviours)
    miners = [
        HostileMiner(address, kinds[i % len(kinds)], args.port)
        for i, address in enumerate(addresses(args.first_address, args.count))
    ]
    for miner in miners:
        await miner.start()
    print(json.dumps({"ready": len(miners)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for miner in miners:
        await miner.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--first-address", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--port", type=int, default=4028)
    parser.add_argument("--behaviours", help="comma-separated behaviours (default: all, cycled)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
