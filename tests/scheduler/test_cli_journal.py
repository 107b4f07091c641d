"""Log lines for the systemd journal: a priority prefix, no second timestamp (scheduler/cli/journal.py).

tests/deploy/test_systemd_nspawn.py checks the same under a real systemd and journald.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from scheduler.cli.journal import JournalFormatter, error_line, syslog_priority, to_journal


def stream_id(path: Path) -> str:
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


def test_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    journal, other = tmp_path / "journal", tmp_path / "other"
    journal.touch()
    other.touch()
    with journal.open("w") as stream:
        assert to_journal(stream, {"JOURNAL_STREAM": stream_id(journal)})
        assert not to_journal(stream, {"JOURNAL_STREAM": stream_id(other)})  # inherited, not ours
        assert not to_journal(stream, {})
        assert not to_journal(stream, {"JOURNAL_STREAM": "garbage"})


def test_records_get_their_priority_on_every_line_and_no_timestamp() -> None:
    formatter = JournalFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        error = logging.LogRecord(
            "wattmux.x", logging.ERROR, "f", 1, "bad %s", ("thing",), sys.exc_info()
        )
    lines = formatter.format(error).splitlines()
    assert lines[0] == "<3>wattmux.x: bad thing"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)  # the traceback too
    info = logging.LogRecord("wattmux.x", logging.INFO, "f", 1, "tick", (), None)
    assert formatter.format(info) == "<6>wattmux.x: tick"
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [syslog_priority(level) for level in levels] == [7, 6, 4, 3, 2]


def test_error_lines_are_marked_only_for_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stderr"
    path.touch()
    with path.open("w") as stream:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert error_line("dev-1: unavailable: refused", stream) == "dev-1: unavailable: refused"
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(path))
        assert error_line("dev-1: unavailable", stream) == "<3>dev-1: unavailable"
