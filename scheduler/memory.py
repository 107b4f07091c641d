"""Hand freed heap memory back to the operating system after each control tick.

A poll of 10,000 miners decodes 10,000 JSON replies; glibc keeps the freed
pages mapped, so the daemon's resident memory stays at its peak.  On glibc,
``malloc_trim(0)`` returns those pages; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


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
