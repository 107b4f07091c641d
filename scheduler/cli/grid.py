"""``wattmux setpoint`` and ``wattmux mv``: site power control and event M&V over the API."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any
from urllib.parse import quote

from scheduler.cli.client import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_USAGE,
    _print,
    api_options,
    call,
    parse_duration,
)

CSV_COLUMNS = (
    "interval_start",
    "metered_kw",
    "target_kw",
    "baseline_kw",
    "delivered_kw",
    "compliant",
)


def cmd_setpoint(args: argparse.Namespace) -> int:
    """Show, set or release the site power target."""
    if args.clear and args.kw is not None:
        print("wattmux setpoint: give KW or --clear, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.clear:
        data = call(args, "DELETE", "/v1/setpoint")
        _print(args, data, lambda r: f"released ({r['outcome']}); held machines come back")
        return EXIT_OK
    if args.kw is not None:
        body: dict[str, Any] = {"kw": args.kw}
        if args.duration is not None:
            body["hold_seconds"] = args.duration
        if args.id is not None:
            body["id"] = args.id
        data = call(args, "PUT", "/v1/setpoint", body)
        _print(args, data, lambda r: f"target {r['target_id']}: {r['outcome']}, {r['state']}")
        return EXIT_OK
    data = call(args, "GET", "/v1/setpoint")

    def render(s: dict[str, Any]) -> str:
        target = s["target"]
        head = (
            "no target"
            if target is None
            else f"target {target['kw']:,.1f} kW ({target['source']}, {target['state']})"
        )
        metered = "n/a" if s["metered_kw"] is None else f"{s['metered_kw']:,.1f} kW"
        limit = "none" if s["effective_kw"] is None else f"{s['effective_kw']:,.1f} kW"
        held = s["held"]
        return (
            f"{head}; following {limit}; metered {metered}; "
            f"held {held['power_target']} at a power target, {held['sleep']} asleep"
            + ("; base-point stream STALE" if s["signal_stale"] else "")
        )

    _print(args, data, render)
    return EXIT_OK


def cmd_mv(args: argparse.Namespace) -> int:
    """Print an event's M&V: summary, or its intervals as CSV."""
    query = f"?baseline={args.baseline}" if args.baseline else ""
    data = call(args, "GET", f"/v1/events/{quote(args.event, safe=':@')}/mv{query}")
    if args.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in data["intervals"]:
            writer.writerow(["" if row[c] is None else row[c] for c in ("start", *CSV_COLUMNS[1:])])
        sys.stdout.write(out.getvalue())
        return EXIT_OK

    def kw(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.1f} kW"

    def render(m: dict[str, Any]) -> str:
        response = m["response_seconds"]
        compliance = m["compliance_ratio"]
        return "\n".join(
            [
                f"event {m['event_id']} ({m['source']}) {m['start']} .. {m['end']}",
                f"baseline ({m['baseline_method']}) {kw(m['baseline_kw'])}; target {kw(m['target_kw'])}",
                f"committed {kw(m['committed_kw'])}; delivered {kw(m['delivered_kw'])}",
                "response "
                + ("not reached" if response is None else f"{response:.0f} s")
                + "; compliant intervals "
                + ("n/a" if compliance is None else f"{compliance:.0%}"),
            ]
        )

    _print(args, data, render)
    return EXIT_OK


def add_grid_commands(sub: Any) -> None:
    """Add ``setpoint`` and ``mv`` to the ``wattmux`` parser."""
    epilog = "exit codes: " + "; ".join(f"{c} {m}" for c, m in EXIT_CODES.items())
    setpoint = sub.add_parser(
        "setpoint",
        help="show, set (operator) or release the site power target followed on the meter",
        epilog=epilog,
    )
    setpoint.add_argument("kw", nargs="?", type=float, metavar="KW", help="site power target")
    setpoint.add_argument("--for", dest="duration", type=parse_duration, metavar="DURATION")
    setpoint.add_argument("--id", help="idempotency key: the same id again acts once")
    setpoint.add_argument("--clear", action="store_true", help="release the target")
    setpoint.set_defaults(client_command=cmd_setpoint)
    mv = sub.add_parser(
        "mv", help="an event's M&V: baseline, delivered kW, response, compliance", epilog=epilog
    )
    mv.add_argument("event", metavar="EVENT", help="a target id (GET /v1/setpoint) or DR event id")
    mv.add_argument("--baseline", choices=["pre_event", "days_of_history"])
    mv.add_argument("--csv", action="store_true", help="one row per interval")
    mv.set_defaults(client_command=cmd_mv)
    for parser in (setpoint, mv):
        api_options(parser)
