"""The CLI over the API: real HTTP on loopback, readable tables, exit codes scripts can use."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler.api.app import bound_port, serve
from scheduler.api.auth import Role, hash_token, new_token
from scheduler.cli.client import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_RATE_LIMITED,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    parse_duration,
)
from scheduler.cli.main import main
from scheduler.control.service import Mode
from tests.conftest import free_port
from tests.scheduler.api_fixtures import ControlledView, Tokens, build_app
from tests.scheduler.test_api_security import make_view

TOKENS = Tokens()
HOST = "127.70.1.1"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, ControlledView]]:
    view = make_view(tmp_path)
    app = build_app(view, TOKENS, per_minute=60.0, burst=8)
    async with serve(app, HOST, 0) as server:
        yield f"http://{HOST}:{bound_port(server)}", view


async def cli(
    capsys: pytest.CaptureFixture[str], *argv: str, role: Role | None = Role.OPERATOR
) -> tuple[int, str, str]:
    token = ["--token", TOKENS.by_role[role]] if role else []
    code = await asyncio.to_thread(main, [*argv, *token])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.system
async def test_status_and_devices_print_tables(
    served: tuple[str, ControlledView], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = served
    code, out, _ = await cli(capsys, "status", "--url", url, role=Role.VIEWER)
    assert code == EXIT_OK
    assert "mode         auto" in out
    assert "3 mining, 0 asleep, 0 unreachable" in out
    assert "10.5 kW of 100.0 kW allowed" in out
    code, out, _ = await cli(capsys, "devices", "--url", url, role=Role.VIEWER)
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0].split() == [
        "DEVICE", "MODEL", "UP", "WORKLOAD", "DESIRED", "KW", "TH/S", "TEMP_C", "REASON"
    ]  # fmt: skip
    assert lines[1].split() == [
        "m1",
        "S21",
        "Pro",
        "yes",
        "mine(main)",
        "-",
        "3.5",
        "234.0",
        "60.0",
        "-",
    ]
    code, out, _ = await cli(capsys, "devices", "--url", url, "--json", role=Role.VIEWER)
    assert [d["id"] for d in json.loads(out)] == ["m1", "m2", "m3"]


@pytest.mark.system
async def test_override_curtail_mode_change_the_daemon(
    served: tuple[str, ControlledView], capsys: pytest.CaptureFixture[str]
) -> None:
    url, view = served
    assert view.control is not None
    code, out, _ = await cli(capsys, "override", "m2", "sleep", "--for", "2h", "--url", url)
    assert code == EXIT_OK and out.startswith("m2: pinned to sleep until")
    [row] = view.control.overrides()
    assert (row.device_id, str(row.workload), row.by) == ("m2", "sleep", "operator-1")
    assert (row.until - row.at).total_seconds() == 7200

    code, out, _ = await cli(capsys, "curtail", "--kw", "50", "--for", "30m", "--url", url)
    assert code == EXIT_OK and "curtailing to 50.0 kW" in out
    event = view.control.curtail()
    assert event is not None and event.target_kw == 50.0

    code, out, _ = await cli(capsys, "mode", "dry-run", "--url", url)
    assert code == EXIT_OK and out.strip() == "mode dry-run"
    assert view.control.mode is Mode.DRY_RUN

    assert (await cli(capsys, "override", "m2", "--clear", "--url", url))[0] == EXIT_OK
    assert (await cli(capsys, "curtail", "--clear", "--url", url))[0] == EXIT_OK
    assert view.control.overrides() == [] and view.control.curtail() is None


@pytest.mark.system
async def test_exit_codes(
    served: tuple[str, ControlledView], capsys: pytest.CaptureFixture[str]
) -> None:
    url, view = served
    code, _, err = await cli(capsys, "mode", "paused", "--url", url, role=None)
    assert code == EXIT_AUTH and "401" in err and "WATTMUX_TOKEN" in err
    code, _, err = await cli(capsys, "mode", "paused", "--url", url, role=Role.VIEWER)
    assert code == EXIT_AUTH and "403" in err
    code, _, err = await cli(capsys, "override", "nope", "sleep", "--for", "1h", "--url", url)
    assert code == EXIT_REJECTED and "unknown device" in err
    code, _, err = await cli(capsys, "override", "m1", "mine(nowhere)", "--for", "1h", "--url", url)
    assert code == EXIT_REJECTED
    code, _, _ = await cli(capsys, "curtail", "--for", "1h", "--url", url)
    assert code == EXIT_USAGE
    unused = f"http://{HOST}:{free_port(HOST)}"
    code, _, err = await cli(capsys, "status", "--url", unused)
    assert code == EXIT_UNREACHABLE and "cannot reach" in err
    codes = [(await cli(capsys, "mode", "auto", "--url", url))[0] for _ in range(10)]
    assert EXIT_RATE_LIMITED in codes
    assert view.control is not None and view.control.mode is Mode.AUTO


@pytest.mark.system
async def test_token_from_the_environment(
    served: tuple[str, ControlledView],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = served
    monkeypatch.setenv("WATTMUX_TOKEN", TOKENS.by_role[Role.VIEWER])
    monkeypatch.setenv("WATTMUX_URL", url)
    code, out, _ = await cli(capsys, "mode", role=None)
    assert code == EXIT_OK and out.strip() == "mode auto"


def test_token_new_prints_a_token_and_its_config_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "new", "--role", "operator", "--name", "alice"]) == EXIT_OK
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines()[:2])
    token, digest = lines["token"].strip(), lines["sha256"].strip()
    assert len(token) >= 43 and digest == hash_token(token)
    assert f'{{ name = "alice", role = "operator", sha256 = "{digest}" }}' in out


def test_new_tokens_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--token -abc`` is an argparse error, so a printed token must not start with '-'."""
    draws = iter(["-" + "a" * 42, "-" + "b" * 42, "c" * 43])
    monkeypatch.setattr("scheduler.api.auth.secrets.token_urlsafe", lambda _n: next(draws))
    assert new_token() == "c" * 43


@pytest.mark.system
async def test_a_dashed_token_is_taken_as_token_equals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens made elsewhere may start with '-': ``--token=TOKEN`` carries them."""
    dashed = Tokens(by_role={role: "-" + new_token() for role in Role})
    async with serve(build_app(make_view(tmp_path), dashed), HOST, 0) as server:
        url = f"http://{HOST}:{bound_port(server)}"
        argv = ["mode", "--url", url, f"--token={dashed.by_role[Role.VIEWER]}"]
        code = await asyncio.to_thread(main, argv)
    out, _ = capsys.readouterr()
    assert code == EXIT_OK and out.strip() == "mode auto"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "h", "0", "-5m", "1h 30m", "m30"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_demo_takes_a_given_token_or_prints_a_fresh_one(tmp_path: Path) -> None:
    from scheduler.cli.main import build_parser
    from scheduler.demo.site import demo_config

    args = build_parser().parse_args(["demo", "--token", "given-token"])
    assert args.token == "given-token"
    assert build_parser().parse_args(["demo"]).token is None
    config = demo_config(
        4,
        1500.0,
        "127.70.8.1:9470",
        tmp_path / "s.sqlite",
        tokens=[{"name": "demo-admin", "role": "admin", "sha256": hash_token("given-token")}],
    )
    [entry] = config.api.tokens
    assert entry.role == "admin" and entry.sha256 == hash_token("given-token")
