"""The TCP side of a simulated miner: one request per connection, injected faults, counters.

A subclass answers ``respond(raw) -> bytes``; this base accepts a connection,
reads one JSON request (until it parses, EOF, a size cap or an idle deadline),
applies the fault a test injected (only to the commands named in
``fault_commands`` when that is set), writes the reply and closes.  It is an
asyncio Protocol rather than streams so that one process can play 10,000
miners in a benchmark without the simulator dominating the measurement.
"""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass

MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_SECONDS = 10.0
GARBAGE_REPLY = b'{"STATUS":[{"STATUS":"S","When":17,"Code":11,"Msg":"Summ'


class Fault(enum.StrEnum):
    """Misbehaviour a test can inject into one miner."""

    CLOSE = "close"  # accept, then close without replying
    GARBAGE = "garbage"  # reply with broken JSON, NUL-terminated
    HANG = "hang"  # accept, never answer
    SLOW = "slow"  # answer after fault_delay_seconds


@dataclass(slots=True)
class ConnectionStats:
    """Connections being served now, the most served at once, and the total accepted."""

    active: int = 0
    peak: int = 0
    total: int = 0

    def opened(self) -> None:
        """Count a connection that was just accepted."""
        self.active += 1
        self.total += 1
        self.peak = max(self.peak, self.active)

    def closed(self) -> None:
        """Count a connection that is no longer being served."""
        self.active -= 1


def request_command(raw: bytes) -> str | None:
    """The ``command`` of a JSON request, None when it has none."""
    try:
        request = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    command = request.get("command") if isinstance(request, dict) else None
    return command if isinstance(command, str) else None


class SimTcpServer:
    """Serves one request per TCP connection on ``address``:``port``, with injectable faults."""

    def __init__(
        self, address: str, port: int, connection_stats: ConnectionStats | None = None
    ) -> None:
        self.address = address
        self.fault: Fault | None = None
        self.fault_commands: frozenset[str] | None = None  # None: every command
        self.fault_delay_seconds = 1.0
        self.nul_terminator = True
        self.connections = ConnectionStats()
        self.site_connections = connection_stats
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._open: set[_RequestProtocol] = set()

    def respond(self, raw: bytes) -> bytes:
        """The reply to one request, without the terminator (subclasses answer)."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The TCP port the API listens on (the bound one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on address:port (idempotent)."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _RequestProtocol(self), self.address, self._requested_port, backlog=256
            )

    async def stop(self) -> None:
        """Stop listening and drop connections being served, hung ones included (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for protocol in list(self._open):
            protocol.abort()
        if server is not None:
            await server.wait_closed()

    def count(self, opened: bool) -> None:
        """Count a connection opened or served, for this miner and its site."""
        for stats in (self.connections, self.site_connections):
            if stats is None:
                continue
            if opened:
                stats.opened()
            else:
                stats.closed()

    def fault_for(self, request: bytes) -> Fault | None:
        """The fault to play for this request (None: answer normally)."""
        fault = self.fault
        if fault is None or self.fault_commands is None:
            return fault
        command = request_command(request) or ""
        return fault if command.split("+")[0] in self.fault_commands else None


class _RequestProtocol(asyncio.Protocol):
    """One connection: read a JSON request, play the fault or answer, close."""

    def __init__(self, server: SimTcpServer) -> None:
        self._server = server
        self._buffer = b""
        self._answered = False
        self._counted = False
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start counting and the idle deadline."""
        self._transport = transport  # type: ignore[assignment]
        self._server.count(opened=True)
        self._counted = True
        self._server._open.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(REQUEST_TIMEOUT_SECONDS, self._answer)

    def data_received(self, data: bytes) -> None:
        """Collect the request; answer once it parses or passes the size cap."""
        if self._answered:
            return
        self._buffer += data
        if len(self._buffer) < MAX_REQUEST_BYTES:
            try:
                json.loads(self._buffer)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return
        self._answer()

    def eof_received(self) -> bool:
        """The client finished sending: answer what arrived (keep the socket open to write)."""
        self._answer()
        return True

    def _answer(self) -> None:
        if self._answered or self._transport is None:
            return
        self._answered = True
        if self._timer is not None:
            self._timer.cancel()
        fault = self._server.fault_for(self._buffer)
        if fault is Fault.CLOSE:
            self._transport.close()  # read, then close cleanly (no reset) without a word
        elif fault is Fault.HANG:
            pass  # never answer; stop() drops it
        elif fault is Fault.SLOW:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._server.fault_delay_seconds, self._send, fault)
        else:
            self._send(fault)

    def _send(self, fault: Fault | None) -> None:
        assert self._transport is not None
        payload = GARBAGE_REPLY if fault is Fault.GARBAGE else self._server.respond(self._buffer)
        if self._server.nul_terminator:
            payload += b"\x00"
        # Served once the reply is ready: a client waiting for it still holds its slot.
        self._uncount()
        self._transport.write(payload)
        self._transport.close()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self._server.count(opened=False)

    def abort(self) -> None:
        """Drop the connection now (server stopping)."""
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; the client went away or we closed it."""
        if self._timer is not None:
            self._timer.cancel()
        self._uncount()
        self._server._open.discard(self)
