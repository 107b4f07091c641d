"""Bounds on the API's connections, so idle or slow clients cannot starve the daemon's sockets.

uvicorn bounds the idle time between two requests on a connection
(``timeout_keep_alive``) but nothing else: a client that connects and never
sends, or sends one header byte a second, holds its socket (one file
descriptor) for ever, and enough of them leave no descriptor for the polls of
the miners.  ``ConnectionGuard`` sits in the HTTP protocol uvicorn runs for
each connection:

- at most ``max_connections`` connections at once, and ``max_per_client`` per
  client address; a connection over either cap gets a short 503 and is closed
  at once, before it costs more than the moment it took to accept it;
- the request head (request line and headers) must arrive within
  ``header_timeout_seconds`` of the connection being ready for it (accepted,
  or the previous response sent), and the body within ``body_timeout_seconds``
  of the head; a client that misses either is cut off (no answer: it is not
  reading at the pace of a real client);
- ``keep_alive_seconds``: idle time allowed between two requests (uvicorn's).

``connection_cap`` sizes ``max_connections`` so that the API, the device
sockets and the daemon's other descriptors fit the open-files limit together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

ACCEPT_BACKLOG = 128
"""Listen backlog, which is also how many sockets asyncio accepts in one go before any closes."""

FD_MARGIN = 256
"""Descriptors kept for the rest of the daemon: store, feeds' HTTP pool, MQTT, queues, logs."""

MIN_CONNECTIONS = 8
"""The API keeps at least this many connections, however tight the open-files limit."""

REFUSED_LOG_SECONDS = 60.0

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 42\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n\r\n"
    b'{"detail": "too many connections; retry"}'
)


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the API holds, per client and in all, and how long it waits."""

    max_connections: int = 256
    max_per_client: int = 32
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    keep_alive_seconds: int = 5


def connection_cap(
    wanted: int,
    *,
    open_files_limit: int,
    device_sockets: int,
    margin: int = FD_MARGIN,
    accept_burst: int = ACCEPT_BACKLOG,
) -> int:
    """The API's connection cap: ``wanted``, lowered so that it fits the open-files limit.

    What the daemon needs besides the API is reserved first: ``device_sockets``
    (polls and commands in flight at once), the sockets asyncio may accept in
    one burst before the guard closes the ones over the cap, and ``margin``.
    """
    room = open_files_limit - device_sockets - accept_burst - margin
    return max(MIN_CONNECTIONS, min(wanted, room))


class ConnectionGuard:
    """Counts the API's connections per client address and gives uvicorn a guarded protocol."""

    def __init__(
        self, limits: ConnectionLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self.per_client: dict[str, int] = {}
        self._clock = clock
        self._refused_since_log = 0
        self._last_log: float | None = None

    def admit(self, client: str) -> bool:
        """Count a new connection from client in; False (counted nowhere) when over a cap."""
        held = self.per_client.get(client, 0)
        if self.open >= self.limits.max_connections or held >= self.limits.max_per_client:
            self.refused += 1
            self._note_refusal()
            return False
        self.open += 1
        self.per_client[client] = held + 1
        return True

    def release(self, client: str) -> None:
        """Count a connection admitted by ``admit`` out."""
        self.open -= 1
        held = self.per_client.get(client, 0) - 1
        if held > 0:
            self.per_client[client] = held
        else:
            self.per_client.pop(client, None)

    def _note_refusal(self) -> None:
        """Log refusals: the first at once, then at most one summary a minute."""
        self._refused_since_log += 1
        now = self._clock()
        if self._last_log is None or now - self._last_log >= REFUSED_LOG_SECONDS:
            log.warning(
                "API refused %d connection(s): %d open (cap %d, %d per client)",
                self._refused_since_log,
                self.open,
                self.limits.max_connections,
                self.limits.max_per_client,
            )
            self._refused_since_log = 0
            self._last_log = now

    def protocol_class(self) -> type[asyncio.Protocol]:
        """The uvicorn h11 protocol with this guard's caps and deadlines."""
        guard = self

        class GuardedH11Protocol(_GuardedH11Protocol):
            _guard = guard

        return GuardedH11Protocol


class _GuardedH11Protocol(H11Protocol):
    """H11Protocol that is counted by a ConnectionGuard and reads each request within deadlines."""

    _guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client_key: str | None = None
        self._phase: str | None = None  # "head", "body" or None (nothing awaited from the client)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(client):
            transport.write(_BUSY)
            transport.close()
            return
        self._client_key = client
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client_key is None:
            return  # refused in connection_made: uvicorn never saw it
        self._set_phase(None)
        self._guard.release(self._client_key)
        self._client_key = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """Arm the deadline of what the client owes now: a request head, a body, or nothing."""
        if self.transport.is_closing():
            self._set_phase(None)
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            self._set_phase("head")
        elif state is h11.SEND_BODY:
            self._set_phase("body")
        else:
            self._set_phase(None)

    def _set_phase(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            limits = self._guard.limits
            seconds = (
                limits.header_timeout_seconds if phase == "head" else limits.body_timeout_seconds
            )
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        """The client did not send its request head or body in time: drop the connection."""
        self._deadline = None
        self._guard.timed_out += 1
        log.debug("API connection from %s dropped: request %s too slow", self.client, self._phase)
        self._phase = None
        self.transport.abort()
