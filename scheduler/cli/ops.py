"""``wattmux reload | maintenance | report``: operations commands over the HTTP API.

They share the API client of scheduler.cli.client (token, URL, exit codes).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scheduler.cli.client import EXIT_CODES, EXIT_OK, EXIT_USAGE, _api_options, _print, call, table
from scheduler.cli.client import parse_duration as _duration


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the daemon to re-read its config file (admin)."""
    data = call(args, "POST", "/v1/reload")
    _print(args, data, lambda r: str(r["summary"]))
    return EXIT_OK


def cmd_maintenance(args: argparse.Namespace) -> int:
    """List, open or end maintenance windows."""
    if args.target is None:
        if args.clear or args.duration is not None:
            print("wattmux maintenance: give a DEVICE or rack:NAME", file=sys.stderr)
            return EXIT_USAGE
        data = call(args, "GET", "/v1/maintenance")

        def render(windows: list[dict[str, Any]]) -> str:
            if not windows:
                return "no maintenance window in force"
            rows = [
                (w["target"], len(w["devices"]), w["until"][:19], w["by"], w["note"])
                for w in windows
            ]
            return table(rows, ("TARGET", "DEVICES", "UNTIL", "BY", "NOTE"))

        _print(args, data, render)
        return EXIT_OK
    path = f"/v1/maintenance/{args.target}"
    if args.clear:
        data = call(args, "DELETE", path)
        _print(args, data, lambda w: f"{w['target']}: maintenance ended")
        return EXIT_OK
    if args.duration is None:
        print("wattmux maintenance: --for DURATION is required (or --clear)", file=sys.stderr)
        return EXIT_USAGE
    data = call(args, "PUT", path, {"duration_seconds": args.duration, "note": args.note})

    def opened(w: dict[str, Any]) -> str:
        line = (
            f"{w['target']}: {len(w['devices'])} device(s) in maintenance until {w['until'][:19]}"
        )
        if w.get("silence_id"):
            line += f"; alerts silenced ({w['silence_id']})"
        if w.get("silence_error"):
            line += f"; {w['silence_error']}"
        return line

    _print(args, data, opened)
    return EXIT_OK


def add_ops_commands(sub: Any) -> None:
    """Add reload and maintenance to the ``wattmux`` parser."""
    codes = "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
    epilog = f"exit codes: {codes}"
    reload = sub.add_parser(
        "reload",
        help="re-read the daemon's config file: inventory, tokens, policy settings (admin)",
        description=(
            "Asks a running daemon to re-read the config file it was started with (the same as "
            "sending it SIGHUP). Devices added or removed, API tokens and [policy] settings take "
            "effect at once; other sections that changed are named as needing a restart. A file "
            "with errors leaves the running config in place; the reason is printed (exit 5)."
        ),
        epilog=epilog,
    )
    reload.set_defaults(client_command=cmd_reload)
    maintenance = sub.add_parser(
        "maintenance",
        help="leave a machine or rack alone for a while and silence its alerts (operator)",
        description=(
            "With no argument, lists the windows in force. With DEVICE (or rack:NAME) and --for, "
            "opens a window: the policies send its machines nothing, reports count the time as "
            "maintenance, not downtime, and with [alertmanager] configured their alerts are "
            "silenced. --clear ends a window early."
        ),
        epilog=epilog,
    )
    maintenance.add_argument(
        "target", nargs="?", metavar="DEVICE", help="a device id, or rack:NAME for a whole rack"
    )
    maintenance.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        metavar="DURATION",
        help="how long, e.g. 2h, 90m (at most 14 days)",
    )
    maintenance.add_argument("--note", default="", help="why (kept in the audit log)")
    maintenance.add_argument("--clear", action="store_true", help="end the window now")
    maintenance.set_defaults(client_command=cmd_maintenance)
    for parser in (reload, maintenance):
        _api_options(parser)
