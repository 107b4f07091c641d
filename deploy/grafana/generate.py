#!/usr/bin/env python3
"""Generate the wattmux Grafana dashboards (JSON) from the panel tables below.

Usage: python deploy/grafana/generate.py [--check]
Writes deploy/grafana/dashboards/<uid>.json; with --check, exits 1 if a file
differs from what this script generates (run by the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'  # every query is restricted to the chosen daemons


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """One panel: type, title, unit, size and its queries."""

    title: str
    kind: str  # timeseries, stat, table, state-timeline, bargauge
    targets: tuple[Target, ...]
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dashboard:
    """One dashboard: uid, title and its panels in reading order."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


DASHBOARDS = (
    Dashboard(
        "wattmux-site",
        "wattmux / Site overview",
        "Power price against break-even, site power against its cap, workloads and margin.",
        (
            Panel(
                "Power price and break-even per model",
                "timeseries",
                (
                    Target(f"wattmux_power_price_usd_per_mwh{{{SEL}}}", "power price"),
                    Target(
                        f"wattmux_breakeven_power_price_usd_per_mwh{{{SEL}}}",
                        "break-even {{model}}",
                    ),
                ),
                unit="currencyUSD",
                width=24,
                description="USD/MWh. Above a model's break-even line its mining loses money.",
            ),
            Panel(
                "Site power and cap",
                "timeseries",
                (
                    Target(f"wattmux_site_power_watts{{{SEL}}}", "site power"),
                    Target(f"wattmux_site_power_cap_watts{{{SEL}}}", "cap"),
                ),
                unit="watt",
            ),
            Panel(
                "Devices per workload",
                "timeseries",
                (Target(f"wattmux_devices{{{SEL}}}", "{{state}}"),),
                stack=True,
            ),
            Panel(
                "Expected margin of the plan",
                "timeseries",
                (Target(f"wattmux_plan_margin_usd_per_hour{{{SEL}}}", "USD/h"),),
                unit="currencyUSD",
                description="USD per hour, summed over every device's assignment.",
            ),
            Panel(
                "Hashprice",
                "stat",
                (Target(f"wattmux_hashprice_usd_per_th_day{{{SEL}}}", "USD/TH/day"),),
                unit="currencyUSD",
                width=6,
            ),
            Panel(
                "BTC price",
                "stat",
                (Target(f"wattmux_btc_price_usd{{{SEL}}}", "BTC"),),
                unit="currencyUSD",
                width=6,
            ),
        ),
    ),
    Dashboard(
        "wattmux-devices",
        "wattmux / Devices",
        "Every device: reachability, power, hash rate, temperature; unavailable devices.",
        (
            Panel(
                "Devices",
                "table",
                (
                    Target(f"wattmux_device_info{{{SEL}}}", "info", instant=True),
                    Target(f"wattmux_device_up{{{SEL}}}", "up", instant=True),
                    Target(f"wattmux_device_power_watts{{{SEL}}}", "power", instant=True),
                    Target(
                        f"wattmux_device_hashrate_hashes_per_second{{{SEL}}} / 1e12",
                        "TH/s",
                        instant=True,
                    ),
                    Target(
                        f"wattmux_device_temperature_celsius{{{SEL}}}", "temperature", instant=True
                    ),
                    Target(f"wattmux_device_sample_age_seconds{{{SEL}}}", "age", instant=True),
                ),
                width=24,
                height=10,
                options={"transformations": [{"id": "merge", "options": {}}]},
            ),
            Panel(
                "Temperatures",
                "timeseries",
                (Target(f"wattmux_device_temperature_celsius{{{SEL}}}", "{{device}}"),),
                unit="celsius",
            ),
            Panel(
                "Unavailable devices",
                "timeseries",
                (Target(f"sum by (instance) (1 - wattmux_device_up{{{SEL}}})", "unavailable"),),
            ),
            Panel(
                "Devices not answering now",
                "table",
                (Target(f"wattmux_device_up{{{SEL}}} == 0", "down", instant=True),),
                width=24,
            ),
        ),
    ),
    Dashboard(
        "wattmux-decisions",
        "wattmux / Decisions",
        "Why wattmux switched machines, what the devices answered, what is still pending.",
        (
            Panel(
                "Assignment changes per reason",
                "timeseries",
                (
                    Target(
                        f"sum by (reason) (increase(wattmux_decisions_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Commands per outcome",
                "timeseries",
                (
                    Target(
                        f"sum by (outcome) (increase(wattmux_commands_total{{{SEL}}}[$__rate_interval]))",
                        "{{outcome}}",
                    ),
                ),
                stack=True,
            ),
            Panel(
                "Devices not yet at their desired workload",
                "timeseries",
                (Target(f"wattmux_devices_not_at_desired{{{SEL}}}", "wants {{desired}}"),),
            ),
            Panel(
                "Changes per reason over the range",
                "bargauge",
                (
                    Target(
                        f"sum by (reason) (increase(wattmux_decisions_total{{{SEL}}}[$__range]))",
                        "{{reason}}",
                        instant=True,
                    ),
                ),
            ),
        ),
    ),
    Dashboard(
        "wattmux-inputs",
        "wattmux / Inputs",
        "Market input ages, feeds up or down, poll errors and the control loop's pace.",
        (
            Panel(
                "Market input age",
                "timeseries",
                (
                    Target(f"wattmux_market_input_age_seconds{{{SEL}}}", "{{input}}"),
                    Target(f"wattmux_stale_price_threshold_seconds{{{SEL}}}", "stale threshold"),
                ),
                unit="s",
            ),
            Panel(
                "Feeds up",
                "state-timeline",
                (Target(f"wattmux_source_up{{{SEL}}}", "{{source}}"),),
            ),
            Panel(
                "Poll errors per reason",
                "timeseries",
                (
                    Target(
                        f"sum by (reason) (rate(wattmux_poll_errors_total{{{SEL}}}[$__rate_interval]))",
                        "{{reason}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Control tick duration (p95) and rate",
                "timeseries",
                (
                    Target(
                        "histogram_quantile(0.95, sum by (le) "
                        f"(rate(wattmux_tick_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "p95 tick",
                    ),
                    Target(
                        f"rate(wattmux_ticks_total{{{SEL}}}[$__rate_interval])", "ticks per second"
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Network difficulty",
                "stat",
                (Target(f"wattmux_network_difficulty{{{SEL}}}", "difficulty"),),
                width=6,
            ),
            Panel(
                "Block subsidy and fees",
                "stat",
                (
                    Target(f"wattmux_block_subsidy_btc{{{SEL}}}", "subsidy BTC"),
                    Target(f"wattmux_fees_btc_per_block{{{SEL}}}", "fees BTC/block"),
                ),
                width=6,
            ),
        ),
    ),
)


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    """The Grafana JSON of one panel at grid position (x, y)."""
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {
            "defaults": {"unit": panel.unit},
            "overrides": [],
        },
        "options": {},
        "targets": [
            {
                "refId": refs[index],
                "datasource": DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend,
                "instant": target.instant,
                "range": not target.instant,
                "format": "table" if panel.kind == "table" else "time_series",
            }
            for index, target in enumerate(panel.targets)
        ],
    }
    if panel.stack:
        body["fieldConfig"]["defaults"]["custom"] = {
            "stacking": {"mode": "normal"},
            "fillOpacity": 30,
        }
    body.update(panel.options)
    return body


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana JSON model of one dashboard (panels flow left to right, 24 columns)."""
    panels = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["wattmux"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "links": [
            {"type": "dashboards", "tags": ["wattmux"], "asDropdown": True, "title": "wattmux"}
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "instance",
                    "label": "daemon",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": "label_values(wattmux_ticks_total, instance)",
                        "refId": "instance",
                    },
                    "definition": "label_values(wattmux_ticks_total, instance)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".+",
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def rendered() -> dict[Path, str]:
    """Every dashboard file and its text."""
    return {
        OUT / f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n"
        for d in DASHBOARDS
    }


def main() -> int:
    """Write the dashboards, or with --check report the ones that are out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run python deploy/grafana/generate.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
