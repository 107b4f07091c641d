"""Memory housekeeping between control ticks: heap trimming and a frozen start-up heap.

A poll of 10,000 miners decodes 10,000 JSON replies; glibc keeps the freed
pages mapped, so the daemon's resident memory stays at its peak.  On glibc,
``malloc_trim(0)`` returns those pages; elsewhere this does nothing.

Everything alive after the first tick (configuration, devices, drivers,
metrics, modules) lives as long as the daemon, but CPython's cyclic collector
would walk all of it in every full collection: at 10,000 devices about 0.1 s
each, eight of them in a fleet-wide curtail.  ``StartupFreezer`` moves it to
the collector's permanent generation once (``gc.freeze()``); reference
counting still frees it, and the daemon hands it back (``gc.unfreeze()``) when
it stops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable


class StartupFreezer:
    """A tick listener that freezes the heap after the first tick; release() undoes it."""

    def __init__(self) -> None:
        self.frozen = False

    def after_tick(self, tick: int) -> None:
        """After the first tick: collect once, then freeze what is left."""
        if self.frozen or tick < 1:
            return
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        self.frozen = True

    def release(self) -> None:
        """Give the frozen objects back to the collector (the daemon is stopping)."""
        if self.frozen:
            gc.unfreeze()
            self.frozen = False


def heap_trimmer() -> Callable[[int], None]:
    """A tick listener that trims the C heap (a no-op where libc has no malloc_trim)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda _tick: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def after_tick(_tick: int) -> None:
        trim(0)

    return after_tick
