"""What a new operator trips over first: `wattmux run` and `check-config` on a config that cannot
start (API port taken, store path not creatable) and config errors that say where and why."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.cli.main import main
from scheduler.config.loading import ConfigError, load_config, range_warnings
from scheduler.control.service import Actor
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.71.4.1"


def write_config(tmp_path: Path, *, store: str, listen: str, extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f"""
[site]
name = "t"
power_cap_kw = 100.0

[store]
path = "{store}"

[api]
listen = "{listen}"

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"

[[devices]]
id = "m1"
model = "S21 Pro"
address = "127.71.4.20"
pools = ["main"]
{extra}
"""
    )
    return path


def run_daemon(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if " INFO " not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.system
def test_run_with_the_api_port_taken_is_one_line_and_exit_2(tmp_path: Path) -> None:
    port = free_port(HOST)
    with socket.socket() as holder:
        holder.bind((HOST, port))
        holder.listen()
        config = write_config(tmp_path, store=str(tmp_path / "w.sqlite"), listen=f"{HOST}:{port}")
        result = run_daemon(config)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert line.startswith(f"wattmux run: cannot listen on {HOST}:{port}: ")
    assert "in use" in line and str(config) in line and "WATTMUX_API__LISTEN" in line


@pytest.mark.system
def test_an_uncreatable_store_path_is_caught_by_check_config_and_run(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    store = tmp_path / "afile" / "sub" / "w.sqlite"
    config = write_config(tmp_path, store=str(store), listen=f"{HOST}:{free_port(HOST)}")
    result = run_daemon(config)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert "store.path: cannot create directory" in line and "is not a directory" in line
    assert str(config) in line
    assert main(["check-config", str(config)]) == 2


def test_check_config_names_the_store_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    config = write_config(
        tmp_path, store=str(tmp_path / "afile" / "w.sqlite"), listen="127.0.0.1:1"
    )
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: store.path: cannot create directory {tmp_path / 'afile'}" in err


def test_a_bad_address_is_not_repeated(tmp_path: Path) -> None:
    config = write_config(tmp_path, store=str(tmp_path / "w.sqlite"), listen="127.0.0.1:1")
    config.write_text(config.read_text().replace("127.71.4.20", "10.0.1.311"))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert caught.value.problems == [
        "devices[0].address: expected an IPv4 or IPv6 address, got '10.0.1.311'"
    ]


RANGE = """
[[device_ranges]]
id_prefix = "r"
model = "S21 Pro"
first_address = "{first}"
count = {count}
pools = ["main"]
"""


def test_a_range_past_the_last_ipv4_address_names_its_field(tmp_path: Path) -> None:
    extra = RANGE.format(first="255.255.255.250", count=10)
    config = write_config(
        tmp_path, store=str(tmp_path / "w.sqlite"), listen="127.0.0.1:1", extra=extra
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    [problem] = caught.value.problems
    assert problem.startswith("device_ranges[0]: first_address 255.255.255.250 + count 10 runs ")
    assert "past 255.255.255.255 by 4 address(es)" in problem


def test_a_range_across_a_slash_24_is_accepted_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = RANGE.format(first="10.0.1.250", count=10)
    config = write_config(
        tmp_path, store=str(tmp_path / "w.sqlite"), listen="127.0.0.1:1", extra=extra
    )
    [warning] = range_warnings(load_config(config))
    assert warning.startswith("device_ranges[0] (r): 10.0.1.250 + 10 addresses crosses a /24")
    assert "up to 10.0.2.3" in warning and "split the range" in warning
    assert main(["check-config", str(config)]) == 0
    captured = capsys.readouterr()
    assert f"{config}: ok" in captured.out and "crosses a /24" in captured.err
    inside = RANGE.format(first="10.0.1.1", count=254)
    config.write_text(config.read_text().replace(extra, inside))
    assert range_warnings(load_config(config)) == []


def test_the_example_config_ships_no_token_hash() -> None:
    text = (ROOT / "deploy" / "wattmux.example.toml").read_text()
    entries = [
        line
        for line in text.splitlines()
        if "sha256:" in line and not line.lstrip().startswith("#")
    ]
    assert entries == []


def test_a_full_curtail_is_logged_as_such(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from scheduler.core.state import FleetState
    from scheduler.store.operator import ControlStore
    from tests.scheduler.api_fixtures import make_control, small_config

    config = small_config(tmp_path)
    control = make_control(ControlStore.open(config.store.path), FleetState(config.all_devices()))
    actor = Actor("ops", "operator", "127.70.0.9:1", "PUT", "/v1/curtail")
    with caplog.at_level(logging.INFO, logger="scheduler.control.service"):
        control.set_curtail(None, 600, actor)
        control.set_curtail(250.0, 600, actor)
    messages = [r.getMessage() for r in caplog.records if "curtail to" in r.getMessage()]
    assert len(messages) == 2 and "None" not in " ".join(messages)
    assert messages[0].startswith("curtail to a full stop (every device asleep) until ")
    assert messages[1].startswith("curtail to 250 kW until ")
    assert "." not in messages[1].split(" until ")[1].split("+")[0]  # to the second


@pytest.mark.system
def test_check_config_tries_the_api_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store=str(tmp_path / "w.sqlite"), listen="192.0.2.77:9470")
    assert main(["check-config", str(config)]) == 2  # TEST-NET-1: not an address of this machine
    assert "api.listen: cannot listen on 192.0.2.77:9470" in capsys.readouterr().err
    port = free_port(HOST)
    with socket.socket() as holder:
        holder.bind((HOST, port))
        holder.listen()
        config = write_config(tmp_path, store=str(tmp_path / "w.sqlite"), listen=f"{HOST}:{port}")
        assert main(["check-config", str(config)]) == 0  # in use: maybe by the daemon itself
    assert f"warning: api.listen: {HOST}:{port} is in use now" in capsys.readouterr().err
