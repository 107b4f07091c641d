"""Bounded concurrency with two classes of waiters: those marked ahead are served first."""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """At most ``size`` holders at once; a waiter marked ahead is served before the others.

    Within each class waiters are served first come, first served.  A freed slot
    is handed straight to the next waiter, so no late arrival can jump the queue.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._ahead: deque[asyncio.Future[None]] = deque()
        self._behind: deque[asyncio.Future[None]] = deque()

    async def acquire(self, ahead: bool) -> None:
        """Wait for a slot (ahead: before every waiter that is not)."""
        if self._free > 0 and not self._ahead and (ahead or not self._behind):
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._ahead if ahead else self._behind).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled():  # the slot was handed over as we were cancelled
                self.release()
            raise  # a cancelled waiter left in the queue is skipped by release()

    def release(self) -> None:
        """Hand the slot to the next waiter (ahead first), or free it."""
        for queue in (self._ahead, self._behind):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1
