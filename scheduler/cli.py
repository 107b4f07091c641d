"""The ``wattmux`` command line: run, demo, check-config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from scheduler.config import ConfigError, load_config, summarize

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _version() -> str:
    try:
        return version("wattmux")
    except PackageNotFoundError:
        return "unknown"


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="wattmux",
        description=(
            "Schedule mining ASICs by power price and network economics: mine while it pays, "
            "sleep when power costs more than the hash earns."
        ),
    )
    parser.add_argument("--version", action="version", version=f"wattmux {_version()}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon on a site config")
    run.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML config file")

    check = sub.add_parser(
        "check-config", help="validate a config file: summary and exit 0, or every error and exit 2"
    )
    check.add_argument("file", metavar="FILE", help="TOML config file")

    demo = sub.add_parser(
        "demo",
        help="run the daemon on a simulated site replaying real ERCOT prices (2024-08-19..21)",
        description=(
            "Starts N simulated ASICs on loopback addresses (127.77.x.y:4028) speaking the cgminer "
            "API, replays ERCOT HB_SOUTH real-time prices of 2024-08-19..21 sped up, and runs the "
            "daemon against them with the breakeven policy. The fleet sleeps in the evening price "
            "spikes and wakes afterwards. Ctrl-C stops it."
        ),
    )
    demo.add_argument(
        "--asics",
        type=_positive_int,
        default=200,
        metavar="N",
        help="number of simulated ASICs (default 200)",
    )
    demo.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="exit by itself after this many seconds (default: run to the end of the replay)",
    )
    demo.add_argument(
        "--listen",
        type=_listen,
        default="127.0.0.1:9470",
        metavar="HOST:PORT",
        help="where the API and /metrics listen (default 127.0.0.1:9470)",
    )
    demo.add_argument(
        "--speed",
        type=_positive_float,
        default=1500.0,
        metavar="X",
        help="replay speed-up; at 1500 a 15-minute price interval lasts 0.6 s and the "
        "first evening spike arrives after about 47 s (default 1500)",
    )
    demo.add_argument(
        "--no-ui", action="store_true", help="plain log lines instead of the live screen"
    )
    demo.add_argument(
        "--token",
        metavar="VALUE",
        default=None,
        help="admin bearer token for the API (default: a fresh one, printed at start)",
    )
    demo.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help="SQLite store path (default: a temporary file, removed at exit)",
    )
    from scheduler.client import add_client_commands

    add_client_commands(sub)
    return parser


def _check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} error(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: ok")
    for line in summarize(config):
        print(f"  {line}")
    return EXIT_OK


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


def _run(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG

    from scheduler.daemon import Daemon

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        await Daemon(config).run(stop)

    _asyncio_run(main())
    return EXIT_OK


def _asyncio_run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed, else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wattmux`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "check-config":
        return _check_config(args.file)
    if getattr(args, "client_command", None) is not None:
        from scheduler.client import run_client_command

        return run_client_command(args)
    if args.command == "run":
        return _run(args.config)
    if args.command == "demo":
        from scheduler.demo import run_demo

        async def demo() -> None:
            stop = asyncio.Event()
            _install_stop(stop)
            await run_demo(args, stop)

        _asyncio_run(demo())
        return EXIT_OK
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
