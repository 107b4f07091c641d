"""The stuck-loop watchdog: a thread that needs nothing from the event loop it watches."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from scheduler.control.failsafe import FailsafeReport
from scheduler.control.systemd import SystemdHeartbeat, SystemdNotifier
from scheduler.control.watchdog import EXIT_STUCK, LoopWatchdog
from scheduler.core.model import Outcome, OutcomeStatus, Workload


def received(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


async def test_a_loop_hook_that_blocks_the_event_loop_trips_the_failsafe(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        heartbeat = SystemdHeartbeat(SystemdNotifier(path))
        ran: list[str] = []
        exited: list[int] = []
        release = threading.Event()

        async def failsafe() -> FailsafeReport:
            ran.append(threading.current_thread().name)  # on the watchdog's own event loop
            await asyncio.sleep(0)
            sleep = Workload.sleep()
            return FailsafeReport(
                (
                    Outcome("a", sleep, OutcomeStatus.CONFIRMED, sleep, ""),
                    Outcome("b", sleep, OutcomeStatus.UNAVAILABLE, None, "timeout"),
                )
            )

        def exit_process(code: int) -> None:
            exited.append(code)
            release.set()

        watchdog = LoopWatchdog(
            0.3, failsafe, heartbeat=heartbeat, exit_process=exit_process, check_seconds=0.05
        )
        listeners = [watchdog.beat, heartbeat.tick_done]

        def hanging_hook(ticks: int) -> None:  # a tick listener that never returns
            if ticks == 3:
                release.wait(10)

        watchdog.start()
        started = time.monotonic()
        for ticks in range(1, 4):  # what ControlLoop.run does after each tick
            await asyncio.sleep(0.05)
            for listener in (*listeners, hanging_hook):
                listener(ticks)
        # The event loop was blocked in the hook until the watchdog had run the failsafe.
        assert exited == [EXIT_STUCK]
        assert ran == ["wattmux-watchdog"]
        assert 0.3 < time.monotonic() - started < 5
        assert watchdog.report is not None and len(watchdog.report.failed) == 1
        heartbeat.tick_done(4)  # a loop that comes back no longer pings
        watchdog.stop()
        messages = received(sock)
    assert messages[0].startswith("READY=1")
    assert messages.count("WATCHDOG=1") == 2
    assert messages[-1].startswith("STATUS=control loop stuck: failsafe put 1 of 2")


def test_ticks_on_time_never_trip_it() -> None:
    exited: list[int] = []

    async def failsafe() -> FailsafeReport:
        raise AssertionError("not stuck")

    watchdog = LoopWatchdog(0.3, failsafe, exit_process=exited.append, check_seconds=0.02)
    watchdog.start()
    for ticks in range(20):
        time.sleep(0.05)
        watchdog.beat(ticks)
    watchdog.stop()
    assert exited == [] and not watchdog.tripped.is_set()
