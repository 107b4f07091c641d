"""Benchmark: the console in a real Chromium against a 10,000-machine site.

Prints one JSON object per line: {"name", "value", "unit"}.
Usage: python bench/bench_console.py [--devices 10000] [--changes 30] [--cpu-seconds 20]

The site runs in a child process (this script with ``--serve``): the daemon's
API app with the console, a FleetState of ``--devices`` S21s whose samples are
all renewed every 5 s (as the polls would), a real ControlStore, and one
machine's state flipped (mine <-> sleep) every 0.7 s, each change printed with
its wall time.  The parent drives Debian's chromium through Playwright:

- ``console_first_paint_10k_ms``: from navigating to the one-click login link
  (``#/fleet&token=...``) to the fleet table's first rows in the page (goal <= 1500);
- ``console_first_load_bytes``: bytes transferred (compressed) by that first load:
  page, assets, the 10,000-row table (goal <= 1,000,000);
- ``console_update_lag_p95_ms``: a machine's state changed in the daemon to the
  change applied in the page, 95th percentile over ``--changes`` changes (goal <= 1000);
- ``console_daemon_cpu_pct_10_clients``: the daemon's extra CPU (% of one core)
  with 10 consoles open on the fleet table, against none (goal <= 5).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOST = "127.77.44.250"
FLIP_SECONDS = 0.7
POLL_SECONDS = 5.0


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


# --- the site (child process) ------------------------------------------------------------


async def serve_site(devices: int) -> None:
    from scheduler.api.app import bound_port, create_app, serve
    from scheduler.api.auth import (
        Authenticator,
        RateLimiter,
        Role,
        TokenEntry,
        hash_token,
        new_token,
    )
    from scheduler.api.sessions import SessionStore
    from scheduler.api.wiring import ApiSecurity
    from scheduler.config.loading import parse_config
    from scheduler.console.hub import ConsoleHub
    from scheduler.console.web import console_routes
    from scheduler.control.service import ControlService
    from scheduler.core.model import Reading, Sample, Workload
    from scheduler.core.state import FleetState
    from scheduler.observability.metrics import Metrics
    from scheduler.policies import available_policies
    from scheduler.store.operator import ControlStore

    directory = Path(tempfile.mkdtemp(prefix="wattmux-bench-console-"))
    config = parse_config(
        {
            "site": {"name": "bench", "power_cap_kw": 40_000.0},
            "store": {"path": str(directory / "w.sqlite")},
            "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
            "device_ranges": [
                {
                    "id_prefix": "s21",
                    "model": "S21",
                    "first_address": "10.0.0.1",
                    "count": devices,
                    "pools": ["main"],
                    "location": {"rack": "R", "per_rack": 40},
                }
            ],
        },
        "<bench>",
        environ={},
    )
    state = FleetState(config.all_devices(), pool_fee=0.0, power_cap_w=40_000_000.0)
    ids = sorted(state.devices)
    clock = time.monotonic
    state.observe_market(
        {
            "btc_price_usd": Reading(59_013.8, clock(), "bench"),
            "difficulty": Reading(86_871_474_313_762.0, clock(), "bench"),
            "block_subsidy_btc": Reading(3.125, clock(), "bench"),
            "fees_btc_per_block": Reading(0.0, clock(), "bench"),
            "power_price_usd_per_mwh": Reading(30.0, clock(), "bench"),
        }
    )
    asleep: set[str] = set()

    def poll_all() -> None:
        now = clock()
        for index, device_id in enumerate(ids):
            sleeping = device_id in asleep
            state.observe(
                Sample(
                    device_id,
                    now,
                    Workload.sleep() if sleeping else Workload.mine("main"),
                    15.0 if sleeping else 3500.0 + index % 40,
                    0.0 if sleeping else (199.0 + index % 20 / 10) * 1e12,
                    None if sleeping else 60.0 + index % 15,
                )
            )

    poll_all()
    store = ControlStore.open(config.store.path)
    control = ControlService(
        store, state.devices, default_policy="breakeven", policies=list(available_policies())
    )

    class View:
        def __init__(self) -> None:
            self.state = state
            self.metrics = Metrics(state, clock=clock)
            self.config = config
            self.control = control

        def current_plan(self) -> None:
            return None

        def clock(self) -> float:
            return clock()

        def readiness(self) -> dict[str, bool]:
            return {"config": True}

    view = View()
    token = new_token()
    security = ApiSecurity(
        Authenticator([TokenEntry("bench", Role.ADMIN, hash_token(token))]),
        RateLimiter(per_minute=60.0, burst=20),
        sessions=SessionStore(),
    )
    hub = ConsoleHub(view, locations=config.locations())  # type: ignore[arg-type]
    app = create_app(view, security, [console_routes(hub, security)])  # type: ignore[arg-type]
    stop = asyncio.Event()
    async with serve(app, HOST, 0) as server:
        print(
            json.dumps({"port": bound_port(server), "token": token, "pid": os.getpid()}), flush=True
        )
        hub_task = asyncio.create_task(hub.run(stop))
        next_poll = clock() + POLL_SECONDS
        flip = 0
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        flipping = False
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), FLIP_SECONDS)
                if line.strip() == b"flip":
                    flipping = True
                elif line.strip() in (b"noflip",):
                    flipping = False
                elif not line or line.strip() == b"quit":
                    break
            except TimeoutError:
                pass
            if clock() >= next_poll:
                poll_all()
                next_poll += POLL_SECONDS
            if flipping:
                device_id = ids[(flip * 7919) % len(ids)]
                flip += 1
                if device_id in asleep:
                    asleep.discard(device_id)
                else:
                    asleep.add(device_id)
                sleeping = device_id in asleep
                state.observe(
                    Sample(
                        device_id,
                        clock(),
                        Workload.sleep() if sleeping else Workload.mine("main"),
                        15.0 if sleeping else 3500.0,
                        0.0 if sleeping else 199e12,
                        None,
                    )
                )
                print(json.dumps({"changed": device_id, "t": time.time() * 1000}), flush=True)
        stop.set()
        await hub_task
    store.close()
    shutil.rmtree(directory, ignore_errors=True)


# --- the browser side ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--cpu-seconds", type=float, default=20.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_site(args.devices))
        return
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("bench_console: Debian's chromium is missing: run `make chromium`")
    from playwright.sync_api import sync_playwright

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--devices", str(args.devices)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        hello = json.loads(child.stdout.readline())
        base = f"http://{HOST}:{hello['port']}"
        link = f"{base}/console#/fleet&token={hello['token']}"
        label = f"{args.devices // 1000}k" if args.devices % 1000 == 0 else str(args.devices)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            # bypass_csp: Playwright evaluates its probes as strings, which the console's CSP forbids.
            context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
            page = context.new_page()
            page.goto(link)
            page.wait_for_function(
                "window.__wattmux && window.__wattmux.firstRows !== null", timeout=60_000
            )
            paint = page.evaluate("window.__wattmux.firstRows - performance.timeOrigin")
            page.wait_for_timeout(500)
            loaded = page.evaluate(
                "performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                ".reduce((n, e) => n + (e.transferSize || 0), 0)"
            )
            emit(f"console_first_paint_{label}_ms", paint, "ms")
            emit("console_first_load_bytes", loaded, "bytes")

            # Update lag: the child flips machines; the page logs each update it applies.
            changes: list[dict[str, Any]] = []
            child.stdin.write("flip\n")
            child.stdin.flush()
            while len(changes) < args.changes:
                line = json.loads(child.stdout.readline())
                if "changed" in line:
                    changes.append(line)
            child.stdin.write("noflip\n")
            child.stdin.flush()
            page.wait_for_timeout(2000)
            updates = page.evaluate("window.__wattmux.updates")
            lags = []
            for change in changes:
                seen = [
                    u["t"]
                    for u in updates
                    if change["changed"] in u["ids"] and u["t"] >= change["t"] - 5
                ]
                lags.append(min(seen) - change["t"] if seen else 10_000.0)
            lags.sort()
            p95 = lags[min(len(lags) - 1, round(0.95 * len(lags)) - 1)]
            emit("console_update_lag_p95_ms", p95, "ms")
            emit("console_update_lag_median_ms", statistics.median(lags), "ms")
            page.close()

            # CPU: the daemon with no console, then with 10 open on the fleet table.
            pid = hello["pid"]
            time.sleep(2)
            before = cpu_seconds(pid)
            time.sleep(args.cpu_seconds)
            idle = cpu_seconds(pid) - before
            pages = []
            for _ in range(10):
                # A context each, as 10 operators' browsers: one browser holds at most 6
                # connections to a host over HTTP/1.1, and each console keeps one for its events.
                own = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
                console = own.new_page()
                console.goto(link)
                pages.append(console)
            for console in pages:
                console.wait_for_function(
                    "window.__wattmux && window.__wattmux.firstRows !== null", timeout=60_000
                )
            time.sleep(2)
            before = cpu_seconds(pid)
            time.sleep(args.cpu_seconds)
            busy = cpu_seconds(pid) - before
            extra = max(0.0, (busy - idle) / args.cpu_seconds * 100.0)
            emit("console_daemon_cpu_pct_10_clients", extra, "%")
            emit("console_daemon_cpu_pct_no_client", idle / args.cpu_seconds * 100.0, "%")
            browser.close()
        child.stdin.write("quit\n")
        child.stdin.flush()
        child.wait(20)
    finally:
        if child.poll() is None:
            child.kill()


if __name__ == "__main__":
    main()
