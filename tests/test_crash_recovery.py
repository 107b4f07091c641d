"""Crash safety: SIGKILL the daemon (a real subprocess) at random points while it commands a
simulated site (another process), over and over.

After each kill: ``PRAGMA integrity_check`` is ok and every acknowledged API
change is in the store.  After each restart the devices converge in the first
cycle (at most one new command per device).  At the end the site's journal of
received commands is matched to the intents: every command has an intent
begun before it, and no intent was executed twice.

``make test`` runs 50 kills; ``make soak`` 1,000.  The seed is printed on
failure; set WATTMUX_CRASH_SEED to replay a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import httpx
import pytest

from scheduler.api.auth import hash_token, new_token

pytestmark = pytest.mark.system

SIM_FIRST = "127.70.4.1"
API_HOST = "127.70.5.1"
COUNT = 6
TICK_SECONDS = 0.1
REPLY_DELAY_SECONDS = 0.01  # every answer of the site is this late: a window to kill into
MINE = "mine(main)"
SLEEP = "sleep"
ROOT = Path(__file__).resolve().parents[1]


def free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def device_ids() -> list[str]:
    return [f"sim-{i + 1:03d}" for i in range(COUNT)]


def address_of(index: int) -> str:
    base = SIM_FIRST.rsplit(".", 1)
    return f"{base[0]}.{int(base[1]) + index}"


def write_config(path: Path, store: Path, sim_port: int, api_port: int, token: str) -> None:
    path.write_text(
        f"""
[site]
name = "crash"
power_cap_kw = 1000.0

[control]
tick_seconds = {TICK_SECONDS}

[guard]
min_dwell_seconds = 0.0
stale_price_seconds = 3600.0

[store]
path = "{store}"

[api]
listen = "{API_HOST}:{api_port}"
tokens = [{{ name = "ops", role = "operator", sha256 = "{hash_token(token)}" }}]
mutations_per_minute = 60000
mutation_burst = 10000

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"

[[pools]]
name = "backup"
url = "stratum+tcp://backup.pool.invalid:3333"
user = "w"

[[device_ranges]]
id_prefix = "sim"
model = "S21"
first_address = "{SIM_FIRST}"
count = {COUNT}
pools = ["main", "backup"]

[device_ranges.options]
port = {sim_port}
timeout_seconds = 1.0
confirm_timeout_seconds = 2.0
confirm_interval_seconds = 0.02

[[market]]
driver = "static"
btc_price_usd = 59013.8
difficulty = 86871474313762.0
block_subsidy_btc = 3.125
fees_btc_per_block = 0.0
power_price_usd_per_mwh = 20.0
"""
    )


def sim_workloads(port: int) -> dict[str, str]:
    """What each simulated miner runs now, asked over its own API (not through the daemon)."""
    found = {}
    for index, device_id in enumerate(device_ids()):
        with socket.create_connection((address_of(index), port), timeout=2.0) as sock:
            sock.sendall(json.dumps({"command": "config"}).encode())
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        config = json.loads(raw.rstrip(b"\0").decode())["CONFIG"][0]
        found[device_id] = SLEEP if config.get("CurtailMode") == "Sleep" else MINE
    return found


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Site:
    """The simulated site's process and its command journal."""

    port: int
    journal: Path
    process: subprocess.Popen[str]


@contextmanager
def simulated_site(tmp_path: Path) -> Iterator[Site]:
    port = free_port_on(SIM_FIRST)
    journal = tmp_path / "journal.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drivers.sim.journal",
            "--first-address",
            SIM_FIRST,
            "--count",
            str(COUNT),
            "--port",
            str(port),
            "--pool",
            "main=stratum+tcp://main.pool.invalid:3333",
            "--pool",
            "backup=stratum+tcp://backup.pool.invalid:3333",
            "--journal",
            str(journal),
            "--reply-delay-seconds",
            str(REPLY_DELAY_SECONDS),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["ready"] and ready["devices"] == device_ids()
        yield Site(port, journal, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


@dataclass
class CrashRun:
    """State of a crash run: what the API acknowledged, what was seen."""

    tmp_path: Path
    site: Site
    seed: int
    token: str = field(default_factory=new_token)
    api_port: int = 0
    expected: dict[str, str] = field(default_factory=lambda: dict.fromkeys(device_ids(), MINE))
    kills_with_open_intents: int = 0
    recovered_open_intents: int = 0
    log: IO[str] | None = None

    @property
    def store(self) -> Path:
        return self.tmp_path / "wattmux.sqlite"

    @property
    def config(self) -> Path:
        return self.tmp_path / "wattmux.toml"

    def start_daemon(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler.cli.main",
                "--log-level",
                "WARNING",
                "run",
                "-c",
                str(self.config),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def where(self, cycle: int) -> str:
        """Where a failure happened, with the end of the daemons' log (only built on failure)."""
        log = (self.tmp_path / "daemon.log").read_text(errors="replace")[-4000:]
        return f"(seed {self.seed}, cycle {cycle})\n--- daemon log (end) ---\n{log}"

    def wait_ready(self, http: httpx.Client, daemon: subprocess.Popen[bytes], cycle: int) -> None:
        def ready() -> bool:
            assert daemon.poll() is None, (
                f"daemon exited with {daemon.returncode} {self.where(cycle)}"
            )
            try:
                return http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 30.0, f"readiness {self.where(cycle)}")

    def check_store_after_kill(self, cycle: int) -> None:
        with sqlite3.connect(self.store) as db:
            [(integrity,)] = db.execute("PRAGMA integrity_check").fetchall()
            assert integrity == "ok", f"{integrity} {self.where(cycle)}"
            overrides = dict(db.execute("SELECT device_id, workload FROM overrides").fetchall())
            open_intents = db.execute(
                "SELECT COUNT(*) FROM intents WHERE finished_at IS NULL"
            ).fetchone()[0]
        db.close()
        for device_id, workload in self.expected.items():
            if workload == SLEEP or device_id in overrides:
                assert overrides.get(device_id) == workload, (
                    f"acknowledged override of {device_id} to {workload} lost {self.where(cycle)}"
                )
        if open_intents:
            self.kills_with_open_intents += 1
            self.recovered_open_intents += open_intents

    def check_converged_in_one_cycle(self, started_at: float, cycle: int) -> None:
        wait_for(
            lambda: sim_workloads(self.site.port) == self.expected,
            10.0,
            f"devices to converge to {self.expected} {self.where(cycle)}",
        )
        # one cycle: at most one command per device reached the site since the restart
        sent: dict[str, int] = {}
        for line in self.site.journal.read_text().splitlines():
            entry = json.loads(line)
            if entry["command"] == "curtail" and entry["t"] >= started_at:
                sent[entry["device"]] = sent.get(entry["device"], 0) + 1
        for device_id, count in sent.items():
            assert count <= 1, f"{device_id}: {count} commands to converge {self.where(cycle)}"

    def wait_for_open_intent(self, timeout_s: float) -> None:
        """Return once the daemon has an intent open (a command in flight), or after timeout_s."""
        deadline = time.monotonic() + timeout_s
        with sqlite3.connect(self.store, timeout=1.0) as db:
            while time.monotonic() < deadline:
                query = "SELECT 1 FROM intents WHERE finished_at IS NULL LIMIT 1"
                if db.execute(query).fetchone():
                    break
                time.sleep(0.001)
        db.close()

    def mutate(self, http: httpx.Client, rng: random.Random, cycle: int) -> None:
        for device_id in rng.sample(device_ids(), rng.randint(1, COUNT)):
            workload = SLEEP if self.expected[device_id] == MINE else MINE
            response = http.put(
                f"/v1/overrides/{device_id}",
                json={"workload": workload, "duration_seconds": 86400, "note": f"cycle {cycle}"},
            )
            assert response.status_code == 200, f"{response.text} {self.where(cycle)}"
            self.expected[device_id] = workload  # acknowledged

    def check_journal(self) -> tuple[int, int]:
        """Every command the site received belongs to one intent begun before it; none twice."""
        with sqlite3.connect(self.store) as db:
            intents = db.execute(
                "SELECT id, at, device_id, workload FROM intents ORDER BY id"
            ).fetchall()
        db.close()
        by_device: dict[str, list[tuple[float, int, str]]] = {}
        for intent_id, at, device_id, workload in intents:
            by_device.setdefault(device_id, []).append(
                (datetime.fromisoformat(at).timestamp(), intent_id, workload)
            )
        executed: dict[int, list[str]] = {}
        commands = 0
        for line in self.site.journal.read_text().splitlines():
            entry = json.loads(line)
            if entry["command"] != "curtail":
                continue
            commands += 1
            before = [i for i in by_device.get(entry["device"], []) if i[0] <= entry["t"]]
            assert before, f"{entry} has no intent before it (seed {self.seed})"
            _, intent_id, workload = max(before)
            action = entry["parameter"].rpartition(",")[2]
            assert action == ("sleep" if workload == SLEEP else "wakeup"), (
                f"{entry} does not do intent {intent_id} ({workload}) (seed {self.seed})"
            )
            executed.setdefault(intent_id, []).append(line)
        twice = {i: lines for i, lines in executed.items() if len(lines) > 1}
        assert not twice, f"intents executed more than once: {twice} (seed {self.seed})"
        return commands, len(intents)


def crash_cycles(tmp_path: Path, kills: int) -> CrashRun:
    seed = int(os.environ.get("WATTMUX_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    with simulated_site(tmp_path) as site, open(tmp_path / "daemon.log", "w") as log:
        run = CrashRun(tmp_path, site, seed, log=log)
        run.api_port = free_port_on(API_HOST)
        write_config(run.config, run.store, site.port, run.api_port, run.token)
        headers = {"authorization": f"Bearer {run.token}"}
        base = f"http://{API_HOST}:{run.api_port}"
        with httpx.Client(base_url=base, headers=headers, trust_env=False, timeout=5.0) as http:
            for cycle in range(kills + 1):
                started_at = time.time()
                daemon = run.start_daemon()
                try:
                    run.wait_ready(http, daemon, cycle)
                    run.check_converged_in_one_cycle(started_at, cycle)
                    if cycle == kills:
                        break
                    run.mutate(http, rng, cycle)
                    if rng.random() < 0.75:  # mostly: aim into actuation
                        run.wait_for_open_intent(1.0)
                        time.sleep(rng.uniform(0.0, REPLY_DELAY_SECONDS))
                    else:
                        time.sleep(rng.uniform(0.0, 3 * TICK_SECONDS))
                finally:
                    daemon.send_signal(signal.SIGKILL)
                    daemon.wait(10)
                run.check_store_after_kill(cycle)
        run.check_journal()
    return run


@pytest.mark.timeout(300)
def test_sigkill_during_actuation_50_times(tmp_path: Path) -> None:
    run = crash_cycles(tmp_path, 50)
    commands, intents = run.check_journal()
    # the kills really landed while commands were in flight, and recovery handled them
    assert run.kills_with_open_intents >= 10, (run.kills_with_open_intents, run.seed)
    assert commands >= 50 and intents >= commands


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_sigkill_during_actuation_1000_times(tmp_path: Path) -> None:
    run = crash_cycles(tmp_path, 1000)
    commands, intents = run.check_journal()
    assert run.kills_with_open_intents >= 200, (run.kills_with_open_intents, run.seed)
    assert commands >= 1000 and intents >= commands
