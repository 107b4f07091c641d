"""The system mark: only a test that carries it may start a process (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import ctypes.util
import subprocess
import sys

import pytest

MARK_IT = r"mark it @pytest\.mark\.system"


def test_an_unmarked_test_cannot_start_a_process() -> None:
    with pytest.raises(pytest.fail.Exception, match=MARK_IT):
        subprocess.run([sys.executable, "-c", "pass"], check=True)


async def test_nor_through_asyncio() -> None:
    with pytest.raises(pytest.fail.Exception, match=MARK_IT):
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")


def test_finding_libc_is_not_starting_a_process() -> None:
    assert ctypes.util.find_library("c") is not None


@pytest.mark.system
def test_a_system_test_starts_processes() -> None:
    assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0
