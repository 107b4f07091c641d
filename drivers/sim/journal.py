"""``python -m drivers.sim.journal``: serve a simulated site that journals every command, in its own process.

Tests that kill the daemon need the site to live elsewhere.  Each miner
listens on consecutive loopback addresses from ``--first-address`` on one
port; ``--reply-delay-seconds`` makes every answer late, as on a busy controller.  With ``--journal FILE`` every state-changing command a miner receives
(curtail, switchpool, addpool, enablepool, disablepool) is appended to FILE as
one JSON line ``{"t": unix time, "device", "command", "parameter"}`` and
flushed, so a test can count commands per device and per intent.  When all
miners listen, one line ``{"ready": true, "port": P, "devices": [...]}`` goes
to stdout.  SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO

from drivers.sim.miner import Reply, SimMiner
from drivers.sim.site import range_devices
from drivers.sim.tcp import Fault
from scheduler.core.model import Device, Pool

STATE_CHANGING = frozenset({"curtail", "switchpool", "addpool", "enablepool", "disablepool"})


class JournalingMiner(SimMiner):
    """A SimMiner that journals every state-changing command it receives."""

    journal: IO[str] | None = None

    def handle(self, command: str, parameter: str | None = None) -> Reply:
        """Journal a state-changing command, then answer it as SimMiner does."""
        if self.journal is not None and command in STATE_CHANGING:
            entry = {"t": time.time(), "device": self.device.id, "command": command}
            entry["parameter"] = parameter or ""
            self.journal.write(json.dumps(entry) + "\n")
            self.journal.flush()
        return super().handle(command, parameter)


def _pool(text: str) -> Pool:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
    return Pool(name=name, url=url, user="sim.worker")


def build_parser() -> argparse.ArgumentParser:
    """Arguments describing the simulated site."""
    parser = argparse.ArgumentParser(prog="python -m drivers.sim.journal", description=__doc__)
    parser.add_argument("--first-address", required=True, help="first loopback address")
    parser.add_argument("--count", type=int, required=True, help="number of miners")
    parser.add_argument("--port", type=int, required=True, help="TCP port of every miner")
    parser.add_argument("--id-prefix", default="sim", help="device ids PREFIX-001, ...")
    parser.add_argument("--model", default="S21")
    parser.add_argument("--hashrate-ths", type=float, default=200.0)
    parser.add_argument("--power-w", type=float, default=3500.0)
    parser.add_argument("--sleep-power-w", type=float, default=15.0)
    parser.add_argument("--pool", type=_pool, action="append", required=True, help="NAME=URL")
    parser.add_argument("--journal", default=None, help="append state-changing commands here")
    parser.add_argument(
        "--reply-delay-seconds",
        type=float,
        default=0.0,
        help="answer every request this late, as a slow controller does",
    )
    return parser


def devices_from(args: argparse.Namespace) -> list[Device]:
    """The devices the arguments describe (ids as wattmux's device ranges number them)."""
    return range_devices(
        args.first_address,
        args.count,
        args.port,
        id_prefix=args.id_prefix,
        model=args.model,
        hashrate_ths=args.hashrate_ths,
        power_w=args.power_w,
        sleep_power_w=args.sleep_power_w,
        pools=tuple(p.name for p in args.pool),
    )


async def serve(args: argparse.Namespace, journal: IO[str] | None) -> None:
    """Run the miners until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    miners = []
    for device in devices_from(args):
        miner = JournalingMiner(
            device, args.pool, port=args.port, ramp_seconds=0.0, thermal_tau_seconds=0.0
        )
        miner.journal = journal
        if args.reply_delay_seconds > 0:
            miner.fault = Fault.SLOW
            miner.fault_delay_seconds = args.reply_delay_seconds
        miners.append(miner)
    try:
        await asyncio.gather(*(m.start() for m in miners))
        ids = [m.device.id for m in miners]
        print(json.dumps({"ready": True, "port": args.port, "devices": ids}), flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(m.stop() for m in miners))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.journal is None:
        asyncio.run(serve(args, None))
        return 0
    with open(args.journal, "a", encoding="utf-8") as journal:
        asyncio.run(serve(args, journal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
