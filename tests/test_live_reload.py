"""Live reload against a real daemon process (``wattmux run``) over a simulated site process.

SIGHUP adds a miner and a token; ``POST /v1/reload`` with a broken file is
refused with one line and the running config stays; ``wattmux reload`` removes
a miner and changes [policy]; every reload is in the audit log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.api.auth import hash_token, new_token

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[1]
SIM_FIRST = "127.71.3.1"
API_HOST = "127.71.4.1"
ADMIN = new_token()
LATE = new_token()


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def config_text(
    store: Path, sim_port: int, api_port: int, count: int, tokens: str, hysteresis: float
) -> str:
    return f"""
[site]
name = "reload"
power_cap_kw = 1000.0

[control]
tick_seconds = 0.2

[policy]
hysteresis_usd_per_mwh = {hysteresis}

[store]
path = "{store}"

[api]
listen = "{API_HOST}:{api_port}"
tokens = [{tokens}]

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"

[[device_ranges]]
id_prefix = "sim"
model = "S21"
first_address = "{SIM_FIRST}"
count = {count}
pools = ["main"]

[device_ranges.options]
port = {sim_port}
timeout_seconds = 1.0

[[market]]
driver = "static"
btc_price_usd = 59013.8
difficulty = 86871474313762.0
block_subsidy_btc = 3.125
fees_btc_per_block = 0.0
power_price_usd_per_mwh = 20.0
"""


def token_entry(name: str, role: str, token: str) -> str:
    return f'{{ name = "{name}", role = "{role}", sha256 = "{hash_token(token)}" }}'


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def process(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, cwd=ROOT, text=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_sighup_api_and_cli_reload_a_running_daemon(tmp_path: Path) -> None:
    sim_port = free_port_on(SIM_FIRST)
    api_port = free_port_on(API_HOST)
    config = tmp_path / "wattmux.toml"
    store = tmp_path / "wattmux.sqlite"
    admin = token_entry("admin", "admin", ADMIN)

    def write(count: int, tokens: str, hysteresis: float = 2.0) -> None:
        config.write_text(config_text(store, sim_port, api_port, count, tokens, hysteresis))

    write(3, admin)
    base = f"http://{API_HOST}:{api_port}"
    headers = {"authorization": f"Bearer {ADMIN}"}
    site_args = [sys.executable, "-m", "drivers.sim", "--count", "5"]
    site_args += ["--first-address", SIM_FIRST, "--port", str(sim_port)]
    log = (tmp_path / "daemon.log").open("w")
    with (
        process(site_args, stdout=subprocess.PIPE, stdin=subprocess.PIPE) as site,
        process(
            [sys.executable, "-m", "scheduler.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        ) as daemon,
        httpx.Client(base_url=base, headers=headers, timeout=5.0, trust_env=False) as api,
    ):
        assert site.stdout is not None
        assert json.loads(site.stdout.readline())["ready"] == 5

        def devices() -> list[str]:
            try:
                answer = api.get("/v1/devices")
            except httpx.TransportError:
                return []
            return sorted(d["id"] for d in answer.json()) if answer.status_code == 200 else []

        def reachable() -> int:
            return sum(1 for d in api.get("/v1/devices").json() if d["reachable"])

        wait_for(lambda: len(devices()) == 3, 30, "the daemon to serve")
        wait_for(lambda: reachable() == 3, 20, "three miners read")
        assert (
            api.get("/v1/summary", headers={"authorization": f"Bearer {LATE}"}).status_code == 401
        )

        # SIGHUP: one more miner and a new viewer token
        write(4, f"{admin}, {token_entry('late', 'viewer', LATE)}")
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: len(devices()) == 4, 10, "the added miner")
        wait_for(lambda: reachable() == 4, 10, "the added miner polled")
        assert 'wattmux_device_up{device="sim-004"} 1' in api.get("/metrics").text
        late = api.get("/v1/summary", headers={"authorization": f"Bearer {LATE}"})
        assert late.status_code == 200, late.text

        # a broken file: refused with one line, everything stays as it was
        config.write_text(config.read_text().replace("count = 4", 'count = "four"'))
        refused = api.post("/v1/reload")
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "\n" not in detail
        assert detail.startswith("reload refused, running config kept: ")
        assert "device_ranges" in detail and "count" in detail
        assert len(devices()) == 4
        assert (
            api.get("/v1/summary", headers={"authorization": f"Bearer {LATE}"}).status_code == 200
        )

        # the CLI: remove two miners and the late token, change [policy]
        write(2, admin, hysteresis=7.5)
        cli = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "reload", "--url", base],
            env={**os.environ, "WATTMUX_TOKEN": ADMIN},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert cli.returncode == 0, cli.stderr
        assert "devices +0 -2 ~0" in cli.stdout and "policy changed" in cli.stdout
        assert devices() == ["sim-001", "sim-002"]
        metrics = api.get("/metrics").text
        assert 'wattmux_device_up{device="sim-002"}' in metrics
        assert 'device="sim-003"' not in metrics and 'device="sim-004"' not in metrics
        assert (
            api.get("/v1/summary", headers={"authorization": f"Bearer {LATE}"}).status_code == 401
        )
        policy = api.get("/v1/config").json()["policy"]
        assert policy["hysteresis_usd_per_mwh"] == 7.5
        time.sleep(0.6)  # a few ticks with the smaller inventory: the daemon goes on
        assert daemon.poll() is None
        assert api.get("/v1/plan").status_code == 200

        # a viewer may not reload
        write(2, f"{admin}, {token_entry('late', 'viewer', LATE)}")
        daemon.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                api.get("/v1/summary", headers={"authorization": f"Bearer {LATE}"}).status_code
                == 200
            ),
            10,
            "the late token back",
        )
        assert (
            api.post("/v1/reload", headers={"authorization": f"Bearer {LATE}"}).status_code == 403
        )

        audit = [r for r in api.get("/v1/audit").json()["items"] if r["path"] == "/v1/reload"]
        kinds = [(r["method"], r["result"]) for r in reversed(audit)]
        assert kinds == [
            ("SIGHUP", "ok"),
            ("POST", "refused"),
            ("POST", "ok"),
            ("SIGHUP", "ok"),
            ("POST", "rejected: role viewer may not do this; needs admin"),
        ]
        assert "count" in json.loads(audit[3]["after"])["error"]
    text = (tmp_path / "daemon.log").read_text()
    assert "config reload refused, running config kept:" in text
    assert "Traceback" not in text
