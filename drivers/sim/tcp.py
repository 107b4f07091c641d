"""The TCP side of a simulated miner: one request per connection, injected faults, counters.

A subclass answers ``respond(raw) -> bytes``; this base accepts a connection,
reads one JSON request (until it parses, EOF, a size cap or an idle deadline),
applies the fault a test injected (only to the commands named in
``fault_commands`` when that is set), writes the reply and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
from dataclasses import dataclass
from typing import Any

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
        self._tasks: set[asyncio.Task[Any]] = set()

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
            self._server = await asyncio.start_server(
                self._serve, self.address, self._requested_port, backlog=256
            )

    async def stop(self) -> None:
        """Stop listening and drop connections being served, hung ones included (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _count(self, opened: bool) -> None:
        for stats in (self.connections, self.site_connections):
            if stats is None:
                continue
            if opened:
                stats.opened()
            else:
                stats.closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes:
        """Read until the bytes form a JSON document, EOF, the size cap or the idle deadline."""
        buffer = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                while len(buffer) < MAX_REQUEST_BYTES:
                    chunk = await reader.read(4096)
                    if not chunk:
                        break
                    buffer += chunk
                    try:
                        json.loads(buffer)
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        continue
                    break
        return buffer

    def _fault_for(self, request: bytes) -> Fault | None:
        fault = self.fault
        if fault is None or self.fault_commands is None:
            return fault
        command = request_command(request) or ""
        return fault if command.split("+")[0] in self.fault_commands else None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._count(opened=True)
        counted = True
        try:
            request = await self._read_request(reader)
            fault = self._fault_for(request)
            if fault is Fault.CLOSE:
                return  # read, then close cleanly (no reset) without a word
            if fault is Fault.HANG:
                await asyncio.get_running_loop().create_future()
            if fault is Fault.SLOW:
                await asyncio.sleep(self.fault_delay_seconds)
            payload = GARBAGE_REPLY if fault is Fault.GARBAGE else self.respond(request)
            if self.nul_terminator:
                payload += b"\x00"
            # Served once the reply is ready: a client waiting for it still holds its slot.
            self._count(opened=False)
            counted = False
            writer.write(payload)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            if counted:
                self._count(opened=False)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)
