"""``wattmux status | devices | override | curtail | mode | token``: the CLI over the HTTP API.

The token comes from ``--token`` or ``WATTMUX_TOKEN``, the URL from ``--url``
or ``WATTMUX_URL``.  Output is a readable table, or the API's JSON with
``--json``.  Exit codes (EXIT_CODES) let scripts tell a refused token from a
rejected change, a rate limit or an unreachable daemon.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from scheduler.api.auth import Role, hash_token, new_token

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_REJECTED = 5
EXIT_RATE_LIMITED = 6

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_ERROR: "the daemon failed (5xx) or answered something unexpected",
    EXIT_USAGE: "bad command line",
    EXIT_UNREACHABLE: "cannot reach the daemon",
    EXIT_AUTH: "token missing, invalid (401) or its role too small (403)",
    EXIT_REJECTED: "the change was refused: unknown device, invalid value (404, 413, 422)",
    EXIT_RATE_LIMITED: "too many changes (429); retry later",
}
DEFAULT_URL = "http://127.0.0.1:9470"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``2h``, ``1d`` or ``1h30m``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise argparse.ArgumentTypeError(
                f"not a duration: {text!r} (e.g. 90s, 30m, 2h, 1d, 1h30m)"
            ) from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return seconds


class ApiFailure(Exception):
    """The API call did not succeed; ``exit_code`` says how."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def _exit_code_for(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status == 429:
        return EXIT_RATE_LIMITED
    if 400 <= status < 500:
        return EXIT_REJECTED
    return EXIT_ERROR


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """Make one API request and return its JSON, or raise ApiFailure."""
    token = args.token or os.environ.get("WATTMUX_TOKEN", "")
    url = (args.url or os.environ.get("WATTMUX_URL") or DEFAULT_URL).rstrip("/")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    verify: Any = args.cacert or True
    try:
        with httpx.Client(timeout=args.timeout, trust_env=False, verify=verify) as client:
            response = client.request(method, url + path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ApiFailure(EXIT_UNREACHABLE, f"cannot reach {url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except (ValueError, AttributeError):
            detail = response.text
        if isinstance(detail, list):  # validation errors: name each field and problem
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}"
                if isinstance(e, dict)
                else str(e)
                for e in detail
            )
        elif not isinstance(detail, str):
            detail = json.dumps(detail)
        hint = " (set WATTMUX_TOKEN or --token)" if response.status_code == 401 else ""
        raise ApiFailure(
            _exit_code_for(response.status_code),
            f"{method} {path}: {response.status_code} {detail}{hint}",
        )
    try:
        return response.json()
    except ValueError as exc:
        raise ApiFailure(EXIT_ERROR, f"{method} {path}: answer is not JSON") from exc


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Left-aligned columns, numbers right-aligned, '-' for missing values."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:,.1f}"
        return str(value)

    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text_rows)]) for i, h in enumerate(header)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(header))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(r) for r in text_rows)])


def _print(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else render(data))


def cmd_status(args: argparse.Namespace) -> int:
    """Print the fleet summary."""
    data = call(args, "GET", "/v1/summary")

    def render(s: dict[str, Any]) -> str:
        curtail = s["curtail"]
        lines = [
            ("site", s["site"]),
            ("mode", s["mode"]),
            ("policy", s["policy"]),
            (
                "devices",
                f"{s['devices']} ({s['mining']} mining, {s['sleeping']} asleep, "
                f"{s['unreachable']} unreachable)",
            ),
            (
                "site power",
                f"{s['site_power_kw']:,.1f} kW of {s['effective_cap_kw']:,.1f} kW "
                f"allowed (site cap {s['site_power_cap_kw']:,.1f} kW)",
            ),
            (
                "curtail",
                "-"
                if curtail is None
                else f"{'full' if curtail['target_kw'] is None else str(curtail['target_kw']) + ' kW'}"
                f" until {_when(curtail['until'])} (by {curtail['by']})",
            ),
            ("overrides", str(s["overrides"])),
            (
                "power price",
                "-"
                if s["power_price_usd_per_mwh"] is None
                else f"{s['power_price_usd_per_mwh']:,.2f} USD/MWh",
            ),
            (
                "hashprice",
                "-"
                if s["hashprice_usd_per_th_day"] is None
                else f"{s['hashprice_usd_per_th_day']:.4f} USD/TH/day",
            ),
            ("plan margin", f"{s['expected_margin_usd_per_hour']:+,.2f} USD/h"),
        ]
        return "\n".join(f"{k:<12} {v}" for k, v in lines)

    _print(args, data, render)
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    """Print every device as a table."""
    data = call(args, "GET", "/v1/devices")
    reasons = {
        a["device"]: a["reason"] for a in ([] if args.json else call(args, "GET", "/v1/plan"))
    }

    def render(devices: list[dict[str, Any]]) -> str:
        rows = [
            (
                d["id"],
                d["model"],
                d["reachable"],
                d["workload"],
                d["desired_workload"],
                None if d["power_w"] is None else d["power_w"] / 1000.0,
                d["hashrate_ths"],
                d["temperature_c"],
                reasons.get(d["id"]) or (None if d["reachable"] else d["last_error"]),
            )
            for d in devices
        ]
        header = ("DEVICE", "MODEL", "UP", "WORKLOAD", "DESIRED", "KW", "TH/S", "TEMP_C", "REASON")
        return table(rows, header)

    _print(args, data, render)
    return EXIT_OK


def cmd_override(args: argparse.Namespace) -> int:
    """Pin a device to a workload for a while, or end its override."""
    path = f"/v1/overrides/{args.device}"
    if args.clear:
        data = call(args, "DELETE", path)
        _print(args, data, lambda o: f"{o['device']}: override to {o['workload']} ended")
        return EXIT_OK
    if args.workload is None or args.duration is None:
        print("wattmux override: WORKLOAD and --for are required (or --clear)", file=sys.stderr)
        return EXIT_USAGE
    body = {"workload": args.workload, "duration_seconds": args.duration, "note": args.note}
    data = call(args, "PUT", path, body)
    _print(
        args, data, lambda o: f"{o['device']}: pinned to {o['workload']} until {_when(o['until'])}"
    )
    return EXIT_OK


def cmd_curtail(args: argparse.Namespace) -> int:
    """Start, replace or end the site-wide curtail event."""
    if args.kw is None and not args.full and not args.clear and args.duration is None:
        data = call(args, "GET", "/v1/curtail")
        _print(args, data, _curtail_line)
        return EXIT_OK
    if args.clear:
        data = call(args, "DELETE", "/v1/curtail")
        _print(args, data, lambda c: f"curtail ended; site cap {c['site_power_cap_kw']:,.1f} kW")
        return EXIT_OK
    if (args.kw is None) == (not args.full) or args.duration is None:
        print(
            "wattmux curtail: give --kw N or --full, and --for DURATION (or --clear)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    body = {"target_kw": None if args.full else args.kw, "duration_seconds": args.duration}
    data = call(args, "PUT", "/v1/curtail", body)
    _print(
        args,
        data,
        lambda c: (
            f"curtailing to {c['effective_cap_kw']:,.1f} kW until {_when(c['event']['until'])}"
        ),
    )
    return EXIT_OK


def when(text: str | None) -> str | None:
    """An API timestamp to the second (``2026-12-06T02:40:00+00:00``); None stays None."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).isoformat(timespec="seconds")
    except ValueError:
        return text


def _when(text: str) -> str:
    return when(text) or "-"


def _curtail_line(c: dict[str, Any]) -> str:
    event = c["event"]
    if event is None:
        return f"no curtail in force; site cap {c['site_power_cap_kw']:,.1f} kW"
    target = (
        "full (every device asleep)"
        if event["target_kw"] is None
        else f"{event['target_kw']:,.1f} kW"
    )
    return (
        f"curtail {target} until {_when(event['until'])} (by {event['by']}); "
        f"effective cap {c['effective_cap_kw']:,.1f} kW of site cap {c['site_power_cap_kw']:,.1f} kW"
    )


def cmd_mode(args: argparse.Namespace) -> int:
    """Show or set the mode."""
    if args.mode is None:
        data = call(args, "GET", "/v1/mode")
    else:
        data = call(args, "PUT", "/v1/mode", {"mode": args.mode})
    _print(args, data, lambda m: f"mode {m['mode']}")
    return EXIT_OK


def cmd_dr_preview(args: argparse.Namespace) -> int:
    """Print which machines a demand-response event would put to sleep, before it starts."""
    given = [args.event is not None, args.reduce_kw is not None or args.cap_kw is not None]
    if given.count(True) != 1:
        print(
            "wattmux dr-preview: give --event ID, or --reduce-kw N and/or --cap-kw N",
            file=sys.stderr,
        )
        return EXIT_USAGE
    query = {
        "event": args.event,
        "reduction_kw": args.reduce_kw,
        "target_kw": args.cap_kw,
        "start": args.start,
        "priority": args.priority,
    }
    params = urlencode({k: v for k, v in query.items() if v is not None})
    data = call(args, "GET", f"/v1/demand-response/preview?{params}")

    def render(p: dict[str, Any]) -> str:
        lost = p["margin_lost_usd_per_hour"]
        head = (
            f"event {p['event_id']} at {_when(p['start'])}: limit {p['limit_kw']:,.1f} kW; "
            f"site {p['site_kw_before']:,.1f} -> {p['site_kw_after']:,.1f} kW; "
            f"{len(p['machines'])} machines shed {p['shed_kw']:,.1f} kW, "
            f"margin lost {'-' if lost is None else f'{lost:,.2f}'} USD/h"
            + ("" if p["feasible"] else "; NOT FEASIBLE: the site cannot get under the limit")
        )
        rows = [
            (
                m["order"],
                m["device"],
                m["model"],
                m["efficiency_j_per_th"],
                m["workload_before"],
                m["shed_kw"],
                m["margin_lost_usd_per_hour"],
            )
            for m in p["machines"]
        ]
        header = ("ORDER", "DEVICE", "MODEL", "J/TH", "BEFORE", "SHED_KW", "LOST_USD_H")
        return head + ("\n" + table(rows, header) if rows else "")

    _print(args, data, render)
    return EXIT_OK


def cmd_token_new(args: argparse.Namespace) -> int:
    """Print a fresh token and the config entry holding its hash."""
    token = new_token()
    digest = hash_token(token)
    print(f"token:  {token}")
    print(f"sha256: {digest}")
    print("config ([api] tokens):")
    print(f'  {{ name = "{args.name}", role = "{args.role}", sha256 = "{digest}" }},')
    return EXIT_OK


def api_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to the daemon takes (--url, --token, ...)."""
    parser.add_argument(
        "--url", default=None, help=f"API base URL (env WATTMUX_URL; default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--token",
        default=None,
        help="bearer token (env WATTMUX_TOKEN); write --token=TOKEN for one that starts with '-'",
    )
    parser.add_argument("--cacert", default=None, metavar="PEM", help="CA file for an HTTPS API")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up on the daemon after this many seconds (default 10; exit 3)",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def exit_codes_epilog() -> str:
    """The exit codes, for the epilog of every client command's help."""
    return "exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())


def add_client_commands(sub: Any) -> None:
    """Add the API client subcommands to the ``wattmux`` parser."""
    epilog = exit_codes_epilog()
    status = sub.add_parser("status", help="fleet summary from a running daemon", epilog=epilog)
    status.set_defaults(client_command=cmd_status)
    devices = sub.add_parser("devices", help="every device from a running daemon", epilog=epilog)
    devices.set_defaults(client_command=cmd_devices)
    override = sub.add_parser(
        "override", help="pin a device to a workload for a while (operator)", epilog=epilog
    )
    override.add_argument(
        "device", metavar="DEVICE", help="device id, as in the config and `wattmux devices`"
    )
    override.add_argument("workload", metavar="WORKLOAD", nargs="?", help="sleep, mine(POOL), ...")
    override.add_argument(
        "--for",
        dest="duration",
        type=parse_duration,
        metavar="DURATION",
        help="how long the override holds: 90s, 30m, 2h, 1d, 1h30m (required unless --clear)",
    )
    override.add_argument("--note", default="", help="why (kept in the audit log)")
    override.add_argument("--clear", action="store_true", help="end the device's override")
    override.set_defaults(client_command=cmd_override)
    curtail = sub.add_parser(
        "curtail",
        help="hold the site at N kW for a while (operator); without options: show the curtail",
        epilog=epilog,
    )
    curtail.add_argument("--kw", type=float, metavar="N", help="target site power in kW")
    curtail.add_argument("--full", action="store_true", help="put every device to sleep")
    curtail.add_argument(
        "--for",
        dest="duration",
        type=parse_duration,
        metavar="DURATION",
        help="how long the curtail holds: 90s, 30m, 2h, 1d, 1h30m (with --kw or --full)",
    )
    curtail.add_argument("--clear", action="store_true", help="end the curtail event")
    curtail.set_defaults(client_command=cmd_curtail)
    mode = sub.add_parser("mode", help="show or set the mode (operator)", epilog=epilog)
    mode.add_argument("mode", nargs="?", choices=["auto", "manual", "dry-run", "paused"])
    mode.set_defaults(client_command=cmd_mode)
    preview = sub.add_parser(
        "dr-preview",
        help="which machines a demand-response event would put to sleep, before it starts",
        epilog=epilog,
    )
    preview.add_argument("--event", metavar="ID", help="a demand-response event the daemon knows")
    preview.add_argument("--reduce-kw", type=float, metavar="N", help="hypothetical: shed N kW")
    preview.add_argument("--cap-kw", type=float, metavar="N", help="hypothetical: cap the site")
    preview.add_argument("--start", metavar="ISO", help="hypothetical start, with offset")
    preview.add_argument("--priority", type=int, metavar="N", help="hypothetical priority")
    preview.set_defaults(client_command=cmd_dr_preview)
    for parser in (status, devices, override, curtail, mode, preview):
        api_options(parser)
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    new = token_sub.add_parser("new", help="print a fresh token and its hash for the config")
    new.add_argument("--role", required=True, choices=[r.label for r in Role])
    new.add_argument("--name", default="operator", help="name shown in the audit log")
    new.set_defaults(client_command=cmd_token_new)


def run_client_command(args: argparse.Namespace) -> int:
    """Run a client subcommand; API failures print one line and map to an exit code."""
    command: Callable[[argparse.Namespace], int] = args.client_command
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    try:
        return command(args)
    except ApiFailure as exc:
        print(f"wattmux {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
