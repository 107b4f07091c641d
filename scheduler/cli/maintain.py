"""``wattmux maintain ACTION DEVICE...``: reboot, pool, power-profile or locate, over the API.

Starts a job (``POST /v1/device-actions``, operator), follows it
(``GET /v1/device-actions/{id}``) and prints one line per device.  Exit 0 when
every device confirmed, 1 when some did not (refused, unsupported, failed,
unconfirmed or skipped: each line says why); the API's exit codes otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from scheduler.cli.client import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    _print,
    api_options,
    call,
    parse_duration,
    table,
)

ACTIONS = ("reboot", "pool", "power-profile", "locate")
POLL_SECONDS = 1.0


def _render(job: dict[str, Any]) -> str:
    rows = [(o["device"], o["batch"], o["status"], o["detail"]) for o in job["outcomes"]]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(job["counts"].items()))
    return (
        table(rows, ("DEVICE", "BATCH", "STATUS", "DETAIL"))
        + f"\njob {job['id']} {job['action']}: {counts}"
        + ("" if job["done"] else " (still running)")
    )


def cmd_maintain(
    args: argparse.Namespace,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Start a maintenance job, follow it to its end, print each device's outcome."""
    if args.action == "pool" and not args.pool:
        print("wattmux maintain: pool needs --pool NAME", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "power-profile" and args.level is None:
        print("wattmux maintain: power-profile needs --level SHARE (e.g. 0.8)", file=sys.stderr)
        return EXIT_USAGE
    body: dict[str, Any] = {
        "action": args.action,
        "devices": args.devices,
        "batch_size": args.batch_size,
        "batch_interval_seconds": args.batch_interval,
        "verify_timeout_seconds": args.verify_timeout,
        "stop_on_failure": not args.keep_going,
    }
    if args.action == "pool":
        body["pool"] = args.pool
    if args.action == "power-profile":
        body["power_level"] = args.level
    if args.action == "locate":
        body["locate"] = not args.off
    job = call(args, "POST", "/v1/device-actions", body)
    batches = max(1, int(job["batches"]))
    deadline = clock() + batches * (args.verify_timeout + args.batch_interval + 60.0)
    while not args.no_wait and not job["done"] and clock() < deadline:
        sleep(POLL_SECONDS)
        job = call(args, "GET", f"/v1/device-actions/{job['id']}")
    _print(args, job, _render)
    if not job["done"]:
        return EXIT_OK if args.no_wait else EXIT_ERROR
    confirmed = job["counts"].get("confirmed", 0)
    return EXIT_OK if confirmed == len(job["outcomes"]) else EXIT_ERROR


def add_maintain_parser(sub: Any) -> None:
    """Register ``maintain`` on the CLI's sub-command parser."""
    codes = "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = sub.add_parser(
        "maintain",
        help="reboot, set the pool, set the power profile or blink the locate LED (operator)",
        description=(
            "Acts on the devices in batches and reads each one back before the next batch: "
            "reboot (the uptime starts again), pool (mining on it), power-profile (the power "
            "level), locate (the LED). A device whose firmware lacks the action is reported "
            "'unsupported', never sent it. Exit 1 when any device did not confirm."
        ),
        epilog=f"exit codes: {codes}",
    )
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("devices", nargs="+", metavar="DEVICE", help="device ids")
    parser.add_argument("--pool", metavar="NAME", help="pool: a configured pool name")
    parser.add_argument(
        "--level", type=float, metavar="SHARE", help="power-profile: share of nominal, 0..1"
    )
    parser.add_argument("--off", action="store_true", help="locate: turn the LED off")
    parser.add_argument("--batch-size", type=int, default=10, metavar="N", help="(10)")
    parser.add_argument(
        "--batch-interval",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="pause between batches (0)",
    )
    parser.add_argument(
        "--verify-timeout",
        type=parse_duration,
        default=120.0,
        metavar="DURATION",
        help="read-back time per device (120s)",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="go on after a batch with a failed device"
    )
    parser.add_argument("--no-wait", action="store_true", help="print the job and return")
    api_options(parser)
    parser.set_defaults(client_command=cmd_maintain)
