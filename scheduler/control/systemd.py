"""systemd integration: sd_notify over $NOTIFY_SOCKET, READY after the first tick, watchdog pings.

``SystemdNotifier`` is a small implementation of the sd_notify protocol: one
datagram of ``KEY=value`` lines to the unix socket named by ``NOTIFY_SOCKET``
(a path, or ``@name`` for the abstract namespace).  Outside systemd (no
``NOTIFY_SOCKET``) it does nothing.  ``SystemdHeartbeat`` is what the daemon
hangs on its control loop: after the first completed tick it sends
``READY=1``, after every completed tick ``WATCHDOG=1``.  A loop that hangs
sends nothing, so systemd's ``WatchdogSec`` kills and restarts it; before
that, the daemon's own stuck-loop watchdog (scheduler/control/watchdog.py)
silences the heartbeat, runs the failsafe and exits.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify_address(value: str) -> str | bytes:
    """Turn a NOTIFY_SOCKET value into a socket address (``@x``: abstract name, NUL + x)."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class SystemdNotifier:
    """Sends sd_notify messages to one socket; a no-op when there is none."""

    def __init__(self, socket_path: str | None) -> None:
        self.socket_path = socket_path or None
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """The notifier systemd asked for through NOTIFY_SOCKET (none outside systemd)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to send to."""
        return self.socket_path is not None

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; return False if it could not be sent."""
        if self.socket_path is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message, notify_address(self.socket_path))
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            self._failed = True
            return False
        if self._failed:
            log.info("sd_notify to %s works again", self.socket_path)
        self._failed = False
        return True


def watchdog_seconds(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval systemd set for this process (WATCHDOG_USEC), or None."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000


class SystemdHeartbeat:
    """Tick listener: READY=1 after the first completed tick, WATCHDOG=1 after each one."""

    def __init__(self, notifier: SystemdNotifier) -> None:
        self.notifier = notifier
        self.ready_sent = False
        self.silenced = False

    def tick_done(self, ticks: int) -> None:
        """Called by the control loop after each completed tick (ticks counts them)."""
        if self.silenced:
            return
        if not self.ready_sent:
            self.ready_sent = self.notifier.notify(
                READY="1", STATUS=f"running: first control tick done ({ticks})"
            )
            return
        self.notifier.notify(WATCHDOG="1")

    def silence(self, status: str) -> None:
        """No more READY or WATCHDOG pings (the loop watchdog took over); tell systemd why."""
        self.silenced = True
        self.notifier.notify(STATUS=status)

    def stopping(self) -> None:
        """Tell systemd the daemon is shutting down."""
        self.notifier.notify(STOPPING="1", STATUS="stopping")
