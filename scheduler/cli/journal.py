"""Log output for a terminal or for the systemd journal, and fatal-signal tracebacks.

Under systemd the daemon's stderr is a stream into journald, which stamps every
line with its own time and takes the priority from a ``<N>`` prefix (sd-daemon
style; ``SyslogLevelPrefix=yes``, the default).  Our own timestamp would then
appear twice and every line would be "info".  ``JOURNAL_STREAM`` (``dev:inode``
of the stream systemd connected) tells whether stderr goes to the journal: then
each line carries its priority and no timestamp; on a terminal or in a file the
lines keep the time and the level name.

``faulthandler`` is enabled as well: when systemd's watchdog aborts a hung
daemon (SIGABRT), or it crashes in C code, the Python stack of every thread
reaches stderr (the journal) before it dies.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"
ERR = 3  # syslog priority "err"


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 crit, 3 err, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return ERR
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def to_journal(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` (stderr) is the journal stream systemd named in JOURNAL_STREAM."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat((sys.stderr if stream is None else stream).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """``<priority>name: message``, every line of a multi-line record (tracebacks) prefixed."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The record's lines, each with the ``<N>`` prefix journald turns into PRIORITY."""
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def configure_logging(level: str, stream: TextIO | None = None) -> bool:
    """Set up the root logger on stderr for the journal or a terminal; True for the journal."""
    out = sys.stderr if stream is None else stream
    journal = to_journal(out)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JournalFormatter() if journal else logging.Formatter(TERMINAL_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])  # no-op when the root has handlers
    if not faulthandler.is_enabled():
        # a stream without a usable file descriptor (embedded use): no stack dumps then
        with contextlib.suppress(OSError, ValueError, AttributeError):
            faulthandler.enable(out, all_threads=True)
    return journal


def error_line(text: str, stream: TextIO | None = None) -> str:
    """``text`` as one error line: ``<3>`` before it when the stream goes to the journal."""
    return f"<{ERR}>{text}" if to_journal(stream) else text
