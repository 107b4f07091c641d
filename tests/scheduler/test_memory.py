"""The heap trimmer that runs after every tick."""

from __future__ import annotations

import ctypes.util

import pytest

from scheduler.control.memory import StartupFreezer, heap_trimmer


def test_the_trimmer_calls_malloc_trim_where_glibc_has_it() -> None:
    if ctypes.util.find_library("c") is None:
        pytest.skip("no libc found")
    listener = heap_trimmer()
    assert listener.__name__ == "after_tick"  # the real trim, not the no-op
    junk = [bytearray(200_000) for _ in range(50)]  # heap memory to free and trim
    del junk
    listener(1)  # returns normally


def test_the_freezer_freezes_once_after_the_first_tick_and_releases() -> None:
    import gc

    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    freezer = StartupFreezer()
    freezer.after_tick(0)
    assert gc.get_freeze_count() == 0 and not freezer.frozen
    try:
        freezer.after_tick(1)
        frozen = gc.get_freeze_count()
        assert frozen > 0 and freezer.frozen
        assert gc.get_threshold()[0] == StartupFreezer.YOUNG_THRESHOLD
        freezer.after_tick(2)  # once only: later objects stay with the collector
        assert gc.get_freeze_count() == frozen
    finally:
        freezer.release()
    assert gc.get_freeze_count() == 0 and not freezer.frozen
    assert gc.get_threshold() == thresholds
    freezer.release()  # twice is harmless
