"""The command line behaves in a pipeline: a reader that went away is not an error to report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "wattmux.example.toml"


def test_closed_stdout_pipe_gives_no_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head, less) is gone before the first line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli.main", "check-config", str(EXAMPLE)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert result.returncode == 0
