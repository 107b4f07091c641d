"""The stuck-loop watchdog: the failsafe runs from inside the daemon when no tick completes.

systemd's watchdog (``WatchdogSec``) kills a daemon whose loop stopped pinging,
and only after the restarts give up does ``wattmux failsafe`` run: until then
the devices keep whatever they were last told.  ``LoopWatchdog`` closes that
gap from inside the process.  It is a plain thread, so it depends on nothing
the loop does: not on the event loop (a synchronous hang blocks every task),
not on the loop's TaskGroup, not on its drivers.  The loop reports each
completed tick (``beat``, a tick listener); when none has completed for
``stuck_after_seconds`` (counted from ``start`` for the first one), the thread

1. silences the systemd heartbeat (a loop that recovers meanwhile sends no more
   ``WATCHDOG=1``), and says so in the unit's ``STATUS=``;
2. runs the failsafe on an event loop of its own (``curtail_all``: every device
   to sleep through fresh drivers, each failure contained per device) and logs
   what it could not reach;
3. exits the process (``os._exit`` with ``EXIT_STUCK``), so systemd restarts
   the daemon (or, after too many restarts, runs ``wattmux failsafe`` again).

The daemon sets it up from ``[control] watchdog_ticks`` x ``tick_seconds``,
at least ``watchdog_min_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler.control.failsafe import FailsafeReport
from scheduler.control.systemd import SystemdHeartbeat

log = logging.getLogger(__name__)

EXIT_STUCK = 70  # EX_SOFTWARE: systemd's Restart=on-failure restarts the daemon


class LoopWatchdog:
    """A thread that runs the failsafe and exits when the control loop completes no tick."""

    def __init__(
        self,
        stuck_after_seconds: float,
        failsafe: Callable[[], Coroutine[Any, Any, FailsafeReport]],
        *,
        heartbeat: SystemdHeartbeat | None = None,
        exit_process: Callable[[int], None] = os._exit,
        clock: Callable[[], float] = time.monotonic,
        check_seconds: float | None = None,
    ) -> None:
        self.stuck_after_seconds = stuck_after_seconds
        self.failsafe = failsafe
        self.heartbeat = heartbeat
        self.exit_process = exit_process
        self.clock = clock
        self.check_seconds = (
            check_seconds if check_seconds is not None else min(1.0, stuck_after_seconds / 4)
        )
        self.last_tick_at = clock()
        self.tripped = threading.Event()  # set once the failsafe has been started
        self.report: FailsafeReport | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, ticks: int) -> None:
        """Tick listener: a tick completed."""
        self.last_tick_at = self.clock()

    def start(self) -> None:
        """Start watching (the first tick is due within stuck_after_seconds from now)."""
        self.last_tick_at = self.clock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="wattmux-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the daemon stops); waits for a failsafe already running."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            stuck_for = self.clock() - self.last_tick_at
            if stuck_for > self.stuck_after_seconds:
                self._trip(stuck_for)
                return

    def _trip(self, stuck_for: float) -> None:
        """Silence the heartbeat, run the failsafe, exit."""
        self.tripped.set()
        log.critical(
            "control loop stuck: no tick completed for %.1f s; failsafe: every device to sleep",
            stuck_for,
        )
        if self.heartbeat is not None:
            self.heartbeat.silence("control loop stuck: failsafe running")
        try:
            report = asyncio.run(self.failsafe())
        except BaseException:  # the exit below must happen whatever the failsafe did
            log.exception("failsafe from the watchdog failed")
        else:
            self.report = report
            failed = report.failed
            log.critical(
                "failsafe from the watchdog: %d of %d device(s) confirmed asleep%s",
                len(report.outcomes) - len(failed),
                len(report.outcomes),
                "; not reached: " + ", ".join(o.device_id for o in failed[:20]) if failed else "",
            )
            if self.heartbeat is not None:
                self.heartbeat.silence(
                    f"control loop stuck: failsafe put {len(report.outcomes) - len(failed)}"
                    f" of {len(report.outcomes)} device(s) to sleep; exiting"
                )
        self.exit_process(EXIT_STUCK)
