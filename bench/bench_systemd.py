"""Benchmark: the shipped units under a real systemd 252 (a Debian 12 container, systemd-nspawn).

    watchdog_restart_seconds  the daemon hung (SIGSTOP) to a new daemon ready (READY=1 after
                              its first tick), with the shipped WatchdogSec=60;
                              goal <= WatchdogSec + 10 s
    deadman_seconds           the daemon killed for good (the SIGKILL after which systemd's
                              start limit refuses a restart) to every good simulated miner
                              read back asleep from the host, the failsafe unit (OnFailure=)
                              doing the work; 100 good miners and 10 hostile ones; goal <= 60 s
    deadman_kills             SIGKILLs until systemd gave up (StartLimitBurst)

wattmux is installed with deploy/install.sh into the container, which shares the host's
network; the miners run on the host (127.77.x.y).  Needs root and namespaces; builds the
root file system once (tests/deploy/nspawn_root.sh, ``make nspawn-root``).

Usage: python bench/bench_systemd.py [--miners 100] [--hostile 10] [--skip-watchdog]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy import nspawn
from tests.deploy.site_for_units import UnitSite


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 2), "unit": unit}), flush=True)


def prop(container: nspawn.Container, name: str, unit: str = "wattmux.service") -> str:
    return container.sh(f"systemctl show -P {name} {unit}").stdout.strip()


def ready(container: nspawn.Container) -> bool:
    return prop(container, "ActiveState") == "active" and prop(container, "SubState") == "running"


def watchdog_restart(container: nspawn.Container) -> float:
    pid = container.main_pid()
    restarts = int(prop(container, "NRestarts"))
    os.kill(pid, signal.SIGSTOP)
    hung_at = time.monotonic()
    deadline = hung_at + 300
    while time.monotonic() < deadline:
        if int(prop(container, "NRestarts")) > restarts and ready(container):
            return time.monotonic() - hung_at
        time.sleep(0.2)
    raise RuntimeError("no new daemon ready within 300 s of the hang")


def deadman(container: nspawn.Container, site: UnitSite) -> tuple[float, int]:
    container.sh("systemctl stop wattmux.service; systemctl reset-failed wattmux.service || true")
    container.sh("systemctl start wattmux.service", timeout=300)
    asleep, total = site.asleep()
    if asleep == total:
        raise RuntimeError("every miner is asleep before the daemon dies: nothing to measure")
    kills = 0
    last_kill = 0.0
    while prop(container, "ActiveState") != "failed":
        if ready(container):
            pid = container.main_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
                last_kill = time.monotonic()
                kills += 1
                time.sleep(0.3)
        if kills > 10:
            raise RuntimeError("systemd never gave up restarting the daemon")
        time.sleep(0.05)
    deadline = last_kill + 300
    while time.monotonic() < deadline:
        if site.asleep()[0] == total:
            return time.monotonic() - last_kill, kills
        time.sleep(0.2)
    raise RuntimeError(f"not every miner asleep 300 s after the daemon died: {site.asleep()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--miners", type=int, default=100, help="good simulated miners")
    parser.add_argument("--hostile", type=int, default=10, help="hostile simulated miners")
    parser.add_argument("--skip-watchdog", action="store_true", help="only the dead-man path")
    args = parser.parse_args()
    reason = nspawn.unavailable()
    if reason:
        print(f"bench_systemd: skipped: {reason}", file=sys.stderr)
        return 0
    site = UnitSite(good=args.miners, hostile=args.hostile)
    site.start()
    try:
        with nspawn.booted() as container:
            nspawn.install(container)
            container.sh(f"cat > /etc/wattmux/wattmux.toml <<'EOF'\n{site.config_toml(5.0)}EOF")
            container.sh("systemctl start wattmux.service", timeout=300)
            shipped = prop(container, "WatchdogUSec")
            print(f"bench_systemd: shipped WatchdogSec {shipped}", file=sys.stderr)
            if not args.skip_watchdog:
                emit("watchdog_restart_seconds", watchdog_restart(container), "s")
            seconds, kills = deadman(container, site)
            emit("deadman_seconds", seconds, "s")
            emit("deadman_kills", kills, "kills")
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
