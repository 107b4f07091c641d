"""``wattmux reload | maintenance | report``: operations commands over the HTTP API.

They share the API client of scheduler.cli.client (token, URL, exit codes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from scheduler.cli.client import (
    DEFAULT_URL,
    EXIT_CODES,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ApiFailure,
    _print,
    api_options,
    call,
    table,
)
from scheduler.cli.client import parse_duration as _duration
from scheduler.cli.report_png import write_gain_png


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


def _day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD, got {text!r}") from None


def cmd_report(args: argparse.Namespace) -> int:
    """Per day (and with --machines per machine): uptime, energy, money, gain, DR delivered."""
    query = {"from": args.start, "to": args.end, "device": args.device}
    params = urlencode({k: v for k, v in query.items() if v is not None})
    if args.csv:
        data = call_text(args, f"/v1/reports?{params}&format=csv")
        sys.stdout.write(data)
    else:
        report = call(args, "GET", f"/v1/reports?{params}")
        if args.json:
            print(json.dumps(report, indent=2))
        elif args.machines:
            rows = [
                (
                    r["day"],
                    r["device"],
                    None if r["uptime"] is None else 100.0 * r["uptime"],
                    r["energy_kwh"],
                    r["revenue_usd"],
                    r["energy_cost_usd"],
                    r["margin_usd"],
                    r["gain_over_always_on_usd"],
                    r["dr_delivered_kwh"],
                )
                for r in report["rows"]
            ]
            print(table(rows, MACHINE_HEADER) if rows else "no data in that range")
        else:
            rows = [
                (
                    d["day"],
                    None if d["uptime"] is None else 100.0 * d["uptime"],
                    d["energy_kwh"],
                    d["revenue_usd"],
                    d["energy_cost_usd"],
                    d["margin_usd"],
                    d["gain_over_always_on_usd"],
                    d["cumulative_gain_usd"],
                    d["dr_delivered_kwh"],
                )
                for d in report["days"]
            ]
            print(table(rows, DAY_HEADER) if rows else "no data in that range")
    if args.png is not None:
        report = call(args, "GET", f"/v1/reports?{params}")
        days = report["days"]
        labelled = write_gain_png(
            [d["day"] for d in days], [d["cumulative_gain_usd"] for d in days], Path(args.png)
        )
        if not labelled:
            print(
                f"wattmux report: matplotlib is not installed; {args.png} is a plain chart "
                "without labels (pip install 'wattmux[plot]' for a labelled one)",
                file=sys.stderr,
            )
    return EXIT_OK


DAY_HEADER = (
    "DAY",
    "UPTIME_%",
    "ENERGY_KWH",
    "REVENUE_USD",
    "COST_USD",
    "MARGIN_USD",
    "GAIN_USD",
    "CUM_GAIN_USD",
    "DR_KWH",
)
MACHINE_HEADER = (
    "DAY",
    "DEVICE",
    "UPTIME_%",
    "ENERGY_KWH",
    "REVENUE_USD",
    "COST_USD",
    "MARGIN_USD",
    "GAIN_USD",
    "DR_KWH",
)


def call_text(args: argparse.Namespace, path: str) -> str:
    """GET a text answer (CSV); failures as ApiFailure, like call()."""
    token = args.token or os.environ.get("WATTMUX_TOKEN", "")
    url = (args.url or os.environ.get("WATTMUX_URL") or DEFAULT_URL).rstrip("/")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=args.timeout, trust_env=False, verify=args.cacert or True) as c:
            response = c.get(url + path, headers=headers)
    except httpx.HTTPError as exc:
        raise ApiFailure(EXIT_UNREACHABLE, f"cannot reach {url}: {exc}") from exc
    if response.status_code >= 400:
        call(args, "GET", path)  # the same request again, for call()'s one-line error
    return response.text


def add_ops_commands(sub: Any) -> None:
    """Add reload, maintenance and report to the ``wattmux`` parser."""
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
    report = sub.add_parser(
        "report",
        help="per day and machine: uptime, energy, revenue, cost, margin, gain over always-on, DR",
        description=(
            "Reads GET /v1/reports. Uptime leaves out time curtailed and in maintenance; the "
            "gain over always-on compares the margin made with the margin of every machine "
            "mining at nominal the whole time. Default: one line per day for the site; "
            "--machines: per machine; --csv / --json: every machine and day. --png FILE: a "
            "chart of the cumulative gain (labelled with matplotlib: pip install 'wattmux[plot]')."
        ),
        epilog=epilog,
    )
    report.add_argument(
        "--from",
        dest="start",
        type=_day,
        required=True,
        metavar="DAY",
        help="first day, YYYY-MM-DD (site time zone)",
    )
    report.add_argument(
        "--to", dest="end", type=_day, required=True, metavar="DAY", help="last day, inclusive"
    )
    report.add_argument("--device", metavar="DEVICE", help="one machine only")
    report.add_argument("--machines", action="store_true", help="one line per machine and day")
    report.add_argument("--csv", action="store_true", help="every machine and day as CSV")
    report.add_argument("--png", metavar="FILE", help="also write the cumulative gain chart")
    report.set_defaults(client_command=cmd_report)
    for parser in (reload, maintenance, report):
        api_options(parser)
