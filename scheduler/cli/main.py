"""The ``wattmux`` command line: run, demo, check-config."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.cli.journal import configure_logging, error_line
from scheduler.config.loading import ConfigError, load_config, range_warnings, summarize
from scheduler.version import wattmux_version

if TYPE_CHECKING:
    from scheduler.core.model import Outcome

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


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
            "Schedule bitcoin miners (ASICs) and GPU machines by power price and network "
            "economics: mine while it pays, sleep when power costs more than the hash earns, and "
            "move GPU nodes between AI jobs and mining by queue demand and price."
        ),
    )
    parser.add_argument("--version", action="version", version=f"wattmux {wattmux_version()}")
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
        "--gpus",
        type=int,
        default=0,
        metavar="N",
        help="also N simulated GPU nodes (8 GPUs each) behind a simulated AI job queue; they move "
        "between AI work and mining by demand and price (default 0)",
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
        "--sim-port",
        type=int,
        default=4028,
        metavar="PORT",
        help="TCP port of every simulated miner's API (default 4028, the cgminer port)",
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
    from scheduler.cli.discover import add_parser as add_discover

    add_discover(sub)
    failsafe = sub.add_parser(
        "failsafe",
        help="put every configured device to sleep now, without the control loop (dead-man path)",
        description=(
            "Commands every device of the config to sleep and reads each back. systemd runs it "
            "(wattmux-failsafe.service) when the daemon failed for good. Exit 0 when every "
            "device confirmed, 1 when some did not, 2 on a config error."
        ),
    )
    failsafe.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML config file")
    _add_backtest_parser(sub)
    from scheduler.cli.client import add_client_commands

    add_client_commands(sub)
    from scheduler.cli.ops import add_ops_commands

    add_ops_commands(sub)
    from scheduler.cli.reads import add_read_commands

    add_read_commands(sub)
    from scheduler.cli.maintain import add_maintain_parser

    add_maintain_parser(sub)
    from scheduler.cli.grid import add_grid_commands

    add_grid_commands(sub)
    return parser


def _add_backtest_parser(sub: Any) -> None:
    """The ``backtest`` subcommand (logic in scheduler/backtest/cli.py)."""
    from scheduler.backtest.cli import add_arguments

    backtest = sub.add_parser(
        "backtest",
        help="replay recorded power prices through a policy for a fleet; JSON with every baseline",
        description=(
            "Replays 15-minute ERCOT prices and daily BTC figures through a policy for the fleet "
            "of a config file, with switching costs, and compares it with always-on, the naive "
            "threshold on the last real-time price and the hindsight optimum."
        ),
    )
    add_arguments(backtest)


def _failsafe(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG

    from scheduler.control.failsafe import FailsafeReport, curtail_all

    reports: list[FailsafeReport] = []

    total = sum(len(entry.devices()) for entry in (*config.devices, *config.device_ranges))
    done = [0, time.monotonic()]

    def progress(outcome: Outcome) -> None:  # one line a second at most: long on 10,000 miners
        done[0] += 1
        if time.monotonic() - done[1] >= 1.0 and done[0] < total:
            done[1] = time.monotonic()
            print(f"failsafe: {done[0]} of {total} devices done", file=sys.stderr, flush=True)

    async def main() -> None:
        reports.append(await curtail_all(config, on_outcome=progress))

    _asyncio_run(main())
    report = reports[0]
    for outcome in report.failed:
        line = f"{outcome.device_id}: {outcome.status.value}: {outcome.detail}"
        print(error_line(line), file=sys.stderr)
    print(
        f"failsafe: {len(report.outcomes) - len(report.failed)} of {len(report.outcomes)} "
        "devices confirmed asleep"
    )
    return EXIT_FAILURE if report.failed else EXIT_OK


def _check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} error(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from scheduler.cli.startup import listen_problem, store_path_problem

    listen_error, listen_warning = listen_problem(config.api.host, config.api.port)
    problems = [p for p in (store_path_problem(config.store.path), listen_error) if p]
    if problems:
        print(f"{path}: {len(problems)} error(s)", file=sys.stderr)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: ok")
    for line in summarize(config):
        print(f"  {line}")
    for warning in [*range_warnings(config), *([listen_warning] if listen_warning else [])]:
        print(f"{path}: warning: {warning}", file=sys.stderr)
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

    from scheduler.cli.startup import startup_problem, store_path_problem

    store_problem = store_path_problem(config.store.path)
    if store_problem is not None:
        print(f"wattmux run: {path}: {store_problem}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in range_warnings(config):
        logging.getLogger("scheduler.config").warning("%s: %s", path, warning)
    from scheduler.daemon import Daemon

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        daemon = Daemon(config)
        daemon.config_path = Path(path)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _reload_on_hup, daemon)
        await daemon.run(stop)

    try:
        _asyncio_run(main())
    except Exception as exc:  # an exception group from the daemon's TaskGroup, most often
        line = startup_problem(exc, path, config.api.listen)
        if line is None:
            raise
        print(f"wattmux run: {line}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def _reload_on_hup(daemon: Any) -> None:
    """SIGHUP: re-read the config; a refusal is logged (one line) and the daemon goes on."""
    from scheduler.reload import ReloadRefused

    with contextlib.suppress(ReloadRefused):
        daemon.reload()


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
    try:
        return _main(argv)
    except BrokenPipeError:  # output piped into head/less that exited: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    """Parse the arguments and run the subcommand."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)  # journal: <priority> prefix, no timestamp; faulthandler
    if args.log_level != "DEBUG":  # httpx logs every request at INFO: too much for queue polling
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "check-config":
        return _check_config(args.file)
    if getattr(args, "client_command", None) is not None:
        from scheduler.cli.client import run_client_command

        return run_client_command(args)
    if args.command == "run":
        return _run(args.config)
    if args.command == "failsafe":
        return _failsafe(args.config)
    if args.command == "demo":
        from scheduler.demo.site import DemoError, run_demo

        async def demo() -> None:
            stop = asyncio.Event()
            _install_stop(stop)
            await run_demo(args, stop)

        try:
            _asyncio_run(demo())
        except DemoError as exc:
            print(f"wattmux demo: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK
    if args.command == "discover":
        from scheduler.cli.discover import run_discover

        status: list[int] = []

        async def scan() -> None:
            status.append(await run_discover(args))

        _asyncio_run(scan())
        return status[0]
    if args.command == "backtest":
        from scheduler.backtest.cli import run_backtest_command

        return run_backtest_command(args)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
