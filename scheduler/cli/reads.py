"""``wattmux decisions | audit | plan | market | policy``: thin readers of the API's routes.

Each command makes one GET (``policy NAME`` a PUT) against the route of the
same name and prints a table, or the API's JSON with ``--json``.  Times are
printed to the second.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from scheduler.cli.client import EXIT_OK, api_options, call, exit_codes_epilog, table, when

_MARKET_ROWS = (
    ("btc_price_usd", "BTC price", "USD", ",.2f"),
    ("difficulty", "difficulty", "", ",.0f"),
    ("block_subsidy_btc", "block subsidy", "BTC", ".4f"),
    ("fees_btc_per_block", "fees per block", "BTC", ".4f"),
    ("power_price_usd_per_mwh", "power price", "USD/MWh", ",.2f"),
)


def _print(args: argparse.Namespace, data: Any, render: Callable[[Any], str]) -> None:
    import json

    print(json.dumps(data, indent=2) if args.json else render(data))


def _query(**params: Any) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return f"?{urlencode(given)}" if given else ""


def _more(page: dict[str, Any]) -> str:
    nxt = page.get("next_offset")
    return "" if nxt is None else f"\n(more: --offset {nxt})"


def cmd_decisions(args: argparse.Namespace) -> int:
    """Print decisions and commands, newest first."""
    query = _query(
        device=args.device,
        reason=args.reason,
        kind=args.kind,
        since=args.since,
        until=args.until,
        limit=args.limit,
        offset=args.offset,
    )
    data = call(args, "GET", f"/v1/decisions{query}")

    def render(page: dict[str, Any]) -> str:
        rows = [
            (
                when(d["at"]),
                d["kind"],
                d["device"],
                d["previous"],
                d["workload"],
                d["reason"],
                d["outcome"],
            )
            for d in page["items"]
        ]
        header = ("AT", "KIND", "DEVICE", "FROM", "TO", "REASON", "OUTCOME")
        return table(rows, header) + _more(page)

    _print(args, data, render)
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the API audit log, newest first."""
    data = call(args, "GET", f"/v1/audit{_query(limit=args.limit, offset=args.offset)}")

    def render(page: dict[str, Any]) -> str:
        rows = [
            (
                when(a["at"]),
                a["principal"],
                a["role"],
                a["remote"],
                f"{a['method']} {a['path']}",
                a["status_code"],
                a["result"],
            )
            for a in page["items"]
        ]
        header = ("AT", "WHO", "ROLE", "FROM", "REQUEST", "STATUS", "RESULT")
        return table(rows, header) + _more(page)

    _print(args, data, render)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the current plan: each device's workload, reason and expected margin."""
    data = call(args, "GET", "/v1/plan")

    def render(plan: list[dict[str, Any]]) -> str:
        rows = [
            (a["device"], a["workload"], a["reason"], a["expected_margin_usd_per_hour"])
            for a in plan
        ]
        total = sum(a["expected_margin_usd_per_hour"] for a in plan)
        head = table(rows, ("DEVICE", "WORKLOAD", "REASON", "MARGIN_USD_H"))
        return f"{head}\ntotal margin {total:+,.2f} USD/h" if plan else "no plan yet"

    _print(args, data, render)
    return EXIT_OK


def cmd_market(args: argparse.Namespace) -> int:
    """Print the market inputs with their age and source, and the hashprice."""
    data = call(args, "GET", "/v1/market")

    def render(m: dict[str, Any]) -> str:
        rows: list[tuple[Any, ...]] = []
        for key, label, unit, fmt in _MARKET_ROWS:
            reading = m.get(key)
            if reading is None:
                rows.append((label, "-", unit, None, None))
            else:
                value = format(reading["value"], fmt)
                rows.append((label, value, unit, round(reading["age_seconds"]), reading["source"]))
        hashprice = m.get("hashprice_usd_per_th_day")
        rows.append(
            (
                "hashprice",
                "-" if hashprice is None else f"{hashprice:.4f}",
                "USD/TH/day",
                None,
                "computed",
            )
        )
        text = table(rows, ("INPUT", "VALUE", "UNIT", "AGE_S", "SOURCE"))
        pools = m.get("pools_up") or {}
        if pools:
            text += "\npools: " + ", ".join(
                f"{name} {'up' if up else 'DOWN'}" for name, up in pools.items()
            )
        return text

    _print(args, data, render)
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    """Show the selected policy and the installed ones, or select one (admin)."""
    if args.name is None:
        data = call(args, "GET", "/v1/policy")
    else:
        data = call(args, "PUT", "/v1/policy", {"name": args.name})
    _print(
        args,
        data,
        lambda p: f"policy {p['name']} (installed: {', '.join(p['available'])})",
    )
    return EXIT_OK


def add_read_commands(sub: Any) -> None:
    """Add decisions, audit, plan, market and policy to the ``wattmux`` parser."""
    epilog = exit_codes_epilog()
    decisions = sub.add_parser(
        "decisions",
        help="the decision log: what changed on which device and why, newest first",
        epilog=epilog,
    )
    decisions.add_argument("--device", metavar="DEVICE", help="only this device")
    decisions.add_argument("--reason", metavar="REASON", help="only this reason, e.g. curtail")
    decisions.add_argument(
        "--kind", choices=["decision", "command"], help="decisions (plan changes) or commands sent"
    )
    decisions.add_argument("--since", metavar="ISO", help="from this time (ISO 8601, with offset)")
    decisions.add_argument("--until", metavar="ISO", help="up to this time (ISO 8601, with offset)")
    audit = sub.add_parser(
        "audit",
        help="the API audit log: every change requested, by whom, from where, with its result",
        epilog=epilog,
    )
    for parser in (decisions, audit):
        parser.add_argument(
            "--limit", type=int, default=None, metavar="N", help="rows per page (default 100)"
        )
        parser.add_argument(
            "--offset", type=int, default=None, metavar="N", help="skip the N newest rows"
        )
    decisions.set_defaults(client_command=cmd_decisions)
    audit.set_defaults(client_command=cmd_audit)
    plan = sub.add_parser(
        "plan",
        help="the current plan: each device's workload, the reason, the expected margin",
        epilog=epilog,
    )
    plan.set_defaults(client_command=cmd_plan)
    market = sub.add_parser(
        "market",
        help="BTC price, difficulty, subsidy, fees, power price (age, source) and hashprice",
        epilog=epilog,
    )
    market.set_defaults(client_command=cmd_market)
    policy = sub.add_parser(
        "policy",
        help="show the policy and the installed ones, or select one (admin)",
        epilog=epilog,
    )
    policy.add_argument(
        "name", nargs="?", metavar="NAME", help="policy to select (without: show the current one)"
    )
    policy.set_defaults(client_command=cmd_policy)
    for parser in (decisions, audit, plan, market, policy):
        api_options(parser)
