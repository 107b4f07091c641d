"""The CLI a new operator reaches for: every read route has a command, times to the second,
the reason of each device, the curtail in force, help that answers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from scheduler.api.auth import Role
from scheduler.cli.client import EXIT_OK
from scheduler.cli.main import build_parser
from scheduler.control.service import Actor
from scheduler.core.model import Assignment, Plan, Workload
from tests.scheduler.api_fixtures import ControlledView
from tests.scheduler.test_client import cli, served

__all__ = ["served"]  # the fixture, imported for this module's tests

MICROSECONDS = re.compile(r"\d\d:\d\d:\d\d\.\d+")
ACTOR = Actor("ops", "operator", "127.70.1.9:1", "PUT", "/v1/test")


@pytest.mark.system
async def test_curtail_without_options_shows_the_curtail_in_force(
    served: tuple[str, ControlledView], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = served
    code, out, err = await cli(capsys, "curtail", "--url", url, role=Role.VIEWER)
    assert (code, err) == (EXIT_OK, "")
    assert out.strip() == "no curtail in force; site cap 100.0 kW"
    code, out, _ = await cli(capsys, "curtail", "--kw", "50", "--for", "30m", "--url", url)
    assert code == EXIT_OK and not MICROSECONDS.search(out), out
    code, out, _ = await cli(capsys, "curtail", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    assert out.startswith("curtail 50.0 kW until ") and "(by operator-1)" in out
    assert "effective cap 50.0 kW of site cap 100.0 kW" in out
    assert not MICROSECONDS.search(out), out
    code, out, _ = await cli(capsys, "status", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK and "50.0 kW until" in out and not MICROSECONDS.search(out), out
    code, out, _ = await cli(capsys, "override", "m2", "sleep", "--for", "2h", "--url", url)
    assert code == EXIT_OK and not MICROSECONDS.search(out), out


@pytest.mark.system
async def test_devices_show_the_reason_of_each_workload(
    served: tuple[str, ControlledView], capsys: pytest.CaptureFixture[str]
) -> None:
    url, view = served
    view.plan = Plan(
        0.0,
        (
            Assignment("m1", Workload.mine("main"), "profitable", 1.5),
            Assignment("m2", Workload.sleep(), "override", 0.0),
            Assignment("m3", Workload.sleep(), "curtail", 0.0),
        ),
    )
    code, out, _ = await cli(capsys, "devices", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    header, *rows = out.splitlines()
    assert header.split()[-1] == "REASON"
    assert [row.split()[-1] for row in rows] == ["profitable", "override", "curtail"]


@pytest.mark.system
async def test_plan_market_policy_decisions_and_audit_commands(
    served: tuple[str, ControlledView], capsys: pytest.CaptureFixture[str]
) -> None:
    url, view = served
    assert view.control is not None
    view.plan = Plan(0.0, (Assignment("m1", Workload.mine("main"), "profitable", 1.25),))
    code, out, _ = await cli(capsys, "plan", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    assert out.splitlines()[0].split() == ["DEVICE", "WORKLOAD", "REASON", "MARGIN_USD_H"]
    assert out.splitlines()[1].split() == ["m1", "mine(main)", "profitable", "1.2"]
    assert "total margin +1.25 USD/h" in out

    code, out, _ = await cli(capsys, "market", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    assert [line.split()[0] for line in out.splitlines()[1:6]] == [
        "BTC", "difficulty", "block", "fees", "power"
    ]  # fmt: skip
    assert "hashprice" in out

    code, out, _ = await cli(capsys, "policy", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK and out.startswith("policy breakeven (installed: ")
    code, out, _ = await cli(capsys, "policy", "max-margin", "--url", url, role=Role.ADMIN)
    assert code == EXIT_OK and out.startswith("policy max-margin ")
    assert (await cli(capsys, "policy", "breakeven", "--url", url, role=Role.ADMIN))[0] == EXIT_OK

    code, out, _ = await cli(capsys, "audit", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    header, first, *_ = out.splitlines()
    assert header.split() == ["AT", "WHO", "ROLE", "FROM", "REQUEST", "STATUS", "RESULT"]
    assert "PUT /v1/policy" in first and "admin" in first
    assert not MICROSECONDS.search(out), out
    code, out, _ = await cli(capsys, "audit", "--limit", "1", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK and len(out.splitlines()) == 3 and "(more: --offset 1)" in out

    view.control.put_override("m2", "sleep", 3600, "", ACTOR)
    code, out, _ = await cli(capsys, "decisions", "--url", url, "--json", role=Role.VIEWER)
    assert code == EXIT_OK and set(json.loads(out)) >= {"items", "next_offset"}
    code, out, _ = await cli(capsys, "decisions", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    assert out.splitlines()[0].split() == [
        "AT",
        "KIND",
        "DEVICE",
        "FROM",
        "TO",
        "REASON",
        "OUTCOME",
    ]


def _help(*argv: str) -> str:
    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        choices = getattr(action, "choices", None) or {}
        if argv and argv[0] in choices:
            return str(choices[argv[0]].format_help())
    return parser.format_help()


def test_help_names_gpus_and_explains_every_option() -> None:
    top = _help()
    assert "GPU" in top and "AI" in top
    for command in ("decisions", "audit", "plan", "market", "policy"):
        assert re.search(rf"^\s+{command}\s+\S", top, re.M), command
    override = _help("override")
    assert re.search(r"DEVICE\s+device id", override), override
    for command in ("override", "curtail"):
        text = " ".join(_help(command).split())
        assert "--for DURATION how long" in text, text
    for command in ("status", "devices", "curtail", "decisions"):
        text = " ".join(_help(command).split())
        assert "--timeout SECONDS give up" in text, text


def test_when_prints_to_the_second() -> None:
    from scheduler.cli.client import when

    at = datetime(2026, 12, 6, 2, 40, 1, 123456, tzinfo=UTC)
    assert when(at.isoformat()) == "2026-12-06T02:40:01+00:00"
    assert when(None) is None
