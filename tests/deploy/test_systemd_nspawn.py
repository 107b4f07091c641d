"""The shipped units under a real systemd 252 (PID 1 of a Debian 12 container, systemd-nspawn).

One container is booted for the module; deploy/install.sh installs wattmux in it as
docs/operations.md says; the config points at simulated miners on the host's loopback
(good ones and hostile ones).  A drop-in shortens WatchdogSec to 5 s so that the
watchdog test is quick (bench/bench_systemd.py measures the shipped 60 s); everything
else is the shipped unit.  The tests run in order on the same container: readiness,
watchdog, hardening, stop and resume, give-up and the failsafe, then the journal.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy import nspawn
from tests.deploy.site_for_units import UnitSite

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

TEST_WATCHDOG_SEC = 5
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
STORE = "/var/lib/wattmux/wattmux.sqlite"
VENV_PY = "/opt/wattmux/venv/bin/python"


@dataclass
class Booted:
    container: nspawn.Container
    site: UnitSite
    install_output: str


def wait_for(what: str, check: object, timeout_s: float = 60.0, every: float = 0.2) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def prop(container: nspawn.Container, name: str, unit: str = "wattmux.service") -> str:
    return container.sh(f"systemctl show -P {name} {unit}").stdout.strip()


def store_query(container: nspawn.Container, sql: str) -> list[list[object]]:
    """Rows of a read-only query on the store, run inside as the wattmux user."""
    script = (
        "import json, sqlite3, sys; "
        f"db = sqlite3.connect('file:{STORE}?mode=ro', uri=True); "
        "print(json.dumps([list(r) for r in db.execute(sys.argv[1])]))"
    )
    out = container.sh(f"runuser -u wattmux -- {VENV_PY} -c \"{script}\" '{sql}'").stdout
    return json.loads(out)  # type: ignore[no-any-return]


def journal(container: nspawn.Container, unit: str) -> list[dict[str, object]]:
    out = container.sh(f"journalctl -u {unit} -o json --no-pager", timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def message(entry: dict[str, object]) -> str:
    value = entry.get("MESSAGE", "")
    if isinstance(value, list):  # journald gives non-UTF-8 messages as byte arrays
        return bytes(value).decode(errors="replace")
    return str(value)


@pytest.fixture(scope="module")
def booted() -> Iterator[Booted]:
    reason = nspawn.unavailable()
    if reason:
        pytest.skip(reason)
    site = UnitSite(good=20, hostile=6)
    site.start()
    try:
        with nspawn.booted() as container:
            output = nspawn.install(container)
            config = site.config_toml()
            container.sh(f"cat > /etc/wattmux/wattmux.toml <<'EOF'\n{config}EOF")
            container.sh("/opt/wattmux/venv/bin/wattmux check-config /etc/wattmux/wattmux.toml")
            container.sh(
                "mkdir -p /etc/systemd/system/wattmux.service.d && printf '[Service]\\n"
                f"WatchdogSec={TEST_WATCHDOG_SEC}\\n' > /etc/systemd/system/wattmux.service.d/"
                "test.conf && systemctl daemon-reload"
            )
            yield Booted(container, site, output)
    finally:
        site.stop()


def test_install_as_documented(booted: Booted) -> None:
    """install.sh worked as documented, with the pins although a newer version is offered."""
    c = booted.container
    assert "systemd unit /etc/systemd/system/wattmux.service" in booted.install_output
    assert c.sh("getent passwd wattmux").stdout.split(":")[6].strip() == "/usr/sbin/nologin"
    assert c.sh("stat -c '%a %U:%G' /var/lib/wattmux").stdout.split() == ["750", "wattmux:wattmux"]
    # the pins of constraints.txt, not whatever the index has newest
    pins = dict(
        line.split("==") for line in (nspawn.REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # fmt: skip
    frozen = c.sh(f"{VENV_PY} -m pip freeze").stdout
    for name in ("fastapi", "pydantic", "uvicorn", "msgspec", "annotated-types"):
        assert f"{name}=={pins[name]}" in frozen


def test_start_returns_after_the_first_tick(booted: Booted) -> None:
    c = booted.container
    c.sh("systemctl start wattmux.service", timeout=150)
    # READY=1 and this status text come together, only after the first completed tick
    assert prop(c, "ActiveState") == "active"
    assert prop(c, "StatusText").startswith("running: first control tick done")
    status = c.sh("systemctl status --no-pager wattmux.service", check=False).stdout
    assert 'Status: "running: first control tick done' in status
    started = int(prop(c, "ExecMainStartTimestampMonotonic"))
    active = int(prop(c, "ActiveEnterTimestampMonotonic"))
    assert active > started


def test_watchdog_kills_and_restarts_a_hung_daemon(booted: Booted) -> None:
    c = booted.container
    pid = c.main_pid()
    restarts = int(prop(c, "NRestarts"))
    os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    wait_for(
        "a new daemon ready",
        lambda: int(prop(c, "NRestarts")) > restarts and prop(c, "ActiveState") == "active",
        timeout_s=TEST_WATCHDOG_SEC + 60,
    )
    elapsed = time.monotonic() - stopped_at
    assert c.main_pid() != pid
    entries = journal(c, "wattmux.service")
    texts = [message(e) for e in entries]
    assert any("Watchdog timeout" in t for t in texts), texts[-20:]
    # faulthandler: the aborted daemon's Python stacks reached the journal, as errors
    stack = [e for e in entries if "most recent call first" in message(e)]
    assert stack, texts[-30:]
    assert all(int(str(e["PRIORITY"])) <= 3 for e in stack)
    print(f"watchdog restart with WatchdogSec={TEST_WATCHDOG_SEC}: {elapsed:.1f} s")


def test_hardening_holds_in_the_running_daemon(booted: Booted) -> None:
    c = booted.container
    c.sh("mkdir -p /home/alice && echo secret > /home/alice/notes && echo secret > /root/notes")
    pid = c.main_pid()
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert int(status["CapEff"].strip(), 16) == 0

    uid, gid = status["Uid"].split()[0], status["Gid"].split()[0]
    assert uid != "0"

    def as_daemon(command: str) -> int:  # in the daemon's namespaces, as its user
        argv = ["nsenter", "-t", str(pid), "-a", "-S", uid, "-G", gid, "/bin/sh", "-c", command]
        return subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode

    assert as_daemon("touch /var/lib/wattmux/probe && rm /var/lib/wattmux/probe") == 0
    outside = ("/etc", "/opt/wattmux", "/usr", "/var/lib", "/var/log", "/run", "/", "/home/alice")
    for directory in outside:
        assert as_daemon(f"touch {directory.rstrip('/')}/probe") != 0, directory
    # PrivateTmp: its /tmp and /var/tmp are its own, nobody else sees what it writes there
    assert as_daemon("touch /tmp/probe /var/tmp/probe") == 0
    assert c.sh("ls /tmp/probe /var/tmp/probe", check=False).returncode != 0
    assert as_daemon("cat /home/alice/notes") != 0
    assert as_daemon("cat /root/notes") != 0
    exposure = c.sh("systemd-analyze security --no-pager wattmux.service", check=False).stdout
    score = re.search(r"Overall exposure level for wattmux.service: ([\d.]+)", exposure)
    assert score is not None, exposure[-500:]
    assert float(score.group(1)) <= 2.0
    for path in (STORE, f"{STORE}-wal", f"{STORE}-shm"):
        mode, owner = c.sh(f"stat -c '%a %U' {path}").stdout.split()
        assert int(mode, 8) & 0o077 == 0, (path, mode)  # UMask=0077
        assert owner == "wattmux"


def test_stop_closes_every_intent_and_a_restart_resends_nothing(booted: Booted) -> None:
    c = booted.container
    wait_for("the old miners asleep", lambda: booted.site.asleep()[0] >= booted.site.good // 2)
    c.sh("systemctl stop wattmux.service", timeout=60)
    assert prop(c, "ActiveState") == "inactive"
    assert prop(c, "Result") == "success"
    assert store_query(c, "PRAGMA integrity_check") == [["ok"]]
    assert store_query(c, "SELECT count(*) FROM intents WHERE finished_at IS NULL") == [[0]]
    before = store_query(c, "SELECT count(*) FROM intents")[0][0]
    assert isinstance(before, int) and before >= booted.site.good // 2
    c.sh("systemctl start wattmux.service", timeout=150)
    time.sleep(4)  # a few ticks at 1 s
    assert store_query(c, "SELECT count(*) FROM intents")[0][0] == before
    assert booted.site.asleep() == (booted.site.good // 2, booted.site.good)


def test_crashes_until_the_start_limit_then_the_failsafe_sleeps_every_miner(
    booted: Booted,
) -> None:
    c = booted.container
    assert booted.site.asleep()[0] < booted.site.good  # the S21s mine
    c.sh("systemctl stop wattmux.service && systemctl reset-failed wattmux.service", check=False)
    c.sh("systemctl start wattmux.service", timeout=150)  # the start limit counts from here
    kills = 0
    last_kill = 0.0
    while prop(c, "ActiveState") != "failed":
        if prop(c, "ActiveState") == "active" and prop(c, "SubState") == "running":
            pid = c.main_pid()
            if pid:
                os.kill(pid, signal.SIGKILL)
                last_kill = time.monotonic()
                kills += 1
                time.sleep(0.5)
        assert kills <= 10, "systemd never gave up"
        time.sleep(0.1)
    # StartLimitBurst=5: the first start and four restarts, then the fifth restart is refused
    assert kills == 5, kills
    texts = [message(e) for e in journal(c, "wattmux.service")]
    assert any("Start request repeated too quickly" in t for t in texts), texts[-10:]
    wait_for(
        "every good miner asleep",
        lambda: booted.site.asleep()[0] == booted.site.good,
        timeout_s=120,
        every=0.5,
    )
    print(
        f"dead-man: last kill to {booted.site.good} miners asleep {time.monotonic() - last_kill:.1f} s"
    )
    wait_for(
        "the failsafe's report",
        lambda: any("confirmed asleep" in message(e) for e in journal(c, "wattmux-failsafe")),
        timeout_s=60,
        every=1.0,
    )
    # the hostile miners cannot be confirmed: the failsafe run fails and is retried
    wait_for(
        "the failsafe waiting to retry",
        lambda: prop(c, "SubState", "wattmux-failsafe.service") == "auto-restart",
        timeout_s=60,
    )
    # the documented limitation: a start refused by the start limit still stops the retries
    refused = c.sh("systemctl start wattmux.service", check=False, timeout=60)
    assert refused.returncode != 0
    assert prop(c, "ActiveState", "wattmux-failsafe.service") == "inactive"
    c.sh("systemctl start --no-block wattmux-failsafe.service")  # the documented remedy
    wait_for(
        "the failsafe retrying again",
        lambda: prop(c, "SubState", "wattmux-failsafe.service") == "auto-restart",
        timeout_s=60,
    )
    # the operator starts the daemon again: that ends the failsafe's retries (Conflicts=)
    c.sh("systemctl reset-failed wattmux.service && systemctl start wattmux.service", timeout=150)
    assert prop(c, "ActiveState", "wattmux-failsafe.service") == "inactive"
    assert prop(c, "ActiveState") == "active"


def test_journal_lines_carry_priorities_and_no_second_timestamp(booted: Booted) -> None:
    c = booted.container
    daemon = [e for e in journal(c, "wattmux.service") if e.get("_PID") != "1"]
    assert daemon
    for entry in daemon:
        assert not TIMESTAMP.match(message(entry)), message(entry)
    priorities = {int(str(e["PRIORITY"])) for e in daemon}
    assert 6 in priorities  # info
    assert 4 in priorities  # warnings: the hostile miners unreachable
    unreachable = [e for e in daemon if "bad-" in message(e) and "unreachable" in message(e)]
    assert unreachable and all(e["PRIORITY"] == "4" for e in unreachable)
    failsafe = [e for e in journal(c, "wattmux-failsafe.service") if e.get("_PID") != "1"]
    not_asleep = [e for e in failsafe if message(e).startswith("bad-")]
    assert not_asleep, [message(e) for e in failsafe][-20:]
    assert all(e["PRIORITY"] == "3" for e in not_asleep)  # errors as errors
