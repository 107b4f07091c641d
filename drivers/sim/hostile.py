"""Misbehaving miners for tests: a cgminer-API TCP server with one hostile behaviour each.

Each instance listens on its own loopback address and answers every connection
the same broken way (``Behaviour``): replies too deep or too large to parse,
replies that never end or arrive a byte a second, garbage, truncated JSON, a
reset, a connection that never closes, and well-formed replies whose readings
have the wrong types or are NaN, negative or absurd.  The good simulated miners
(drivers/sim/miner.py) are untouched; a test runs both side by side and checks
that the hostile ones cost only themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import socket
import struct
from typing import Any

DEPTH = 10_000  # brackets in a DEEP reply
DIGITS = 5_000  # digits in a HUGE_INTEGER reply
CHUNK = b"[1," * 21_845  # ~64 KiB of an array that never closes (ENDLESS, OVERSIZED)


class Behaviour(enum.StrEnum):
    """How a hostile miner answers."""

    DEEP = "deep"  # "[[[[..." 10,000 deep
    HUGE_INTEGER = "huge_integer"  # a 5,000-digit integer where the hash rate goes
    ENDLESS = "endless"  # streams bytes until the client goes away
    OVERSIZED = "oversized"  # 64 MiB, then NUL
    DRIP = "drip"  # one byte a second
    GARBAGE = "garbage"  # binary noise, NUL-terminated
    TRUNCATED = "truncated"  # half a valid reply, then close
    RESET = "reset"  # reads the request, then resets the connection
    NEVER_CLOSE = "never_close"  # reads the request, never answers, never closes
    WRONG_TYPES = "wrong_types"  # SUMMARY a string, POOLS a number, STATUS a dict
    NAN = "nan"  # bare NaN hash rate, Infinity power
    NEGATIVE = "negative"  # -1e24 TH/s
    ABSURD = "absurd"  # 9,999 C chips, 1e30 H/s


def joined_reply(
    *, mhs_5s: Any = 100_000_000.0, watts: Any = 3500.0, chip_temp: Any = "60-61-62-63"
) -> dict[str, Any]:
    """A well-formed ``summary+pools+stats+config+power`` reply with the given readings."""

    def ok(key: str, rows: Any) -> list[dict[str, Any]]:
        return [{"STATUS": [{"STATUS": "S", "When": 1, "Code": 11, "Msg": key}], key: rows}]

    return {
        "summary": ok("SUMMARY", [{"Elapsed": 100, "MHS 5s": mhs_5s, "MHS av": mhs_5s}]),
        "pools": ok(
            "POOLS",
            [
                {
                    "POOL": 0,
                    "URL": "stratum+tcp://main.pool.invalid:3333",
                    "Status": "Alive",
                    "Priority": 0,
                    "Stratum Active": True,
                }
            ],
        ),
        "stats": ok("STATS", [{"ID": "BC50"}, {"temp_chip1": chip_temp}]),
        "config": ok("CONFIG", [{"CurtailMode": "None"}]),
        "power": ok("POWER", [{"Watts": watts}]),
        "id": 1,
    }


def reply_bytes(behaviour: Behaviour) -> bytes:
    """The whole reply of the behaviours that send one document (NUL included)."""
    if behaviour is Behaviour.DEEP:
        return b"[" * DEPTH + b"]" * DEPTH + b"\x00"
    if behaviour is Behaviour.HUGE_INTEGER:
        marker = 1234567
        text = json.dumps(joined_reply(mhs_5s=marker)).encode()
        return text.replace(str(marker).encode(), b"9" * DIGITS) + b"\x00"
    if behaviour is Behaviour.GARBAGE:
        return bytes(range(1, 256)) * 8 + b"\x00"
    if behaviour is Behaviour.TRUNCATED:
        text = json.dumps(joined_reply()).encode()
        return text[: len(text) // 2]
    if behaviour is Behaviour.WRONG_TYPES:
        reply: dict[str, Any] = {
            "summary": [{"STATUS": {"STATUS": "S"}, "SUMMARY": "fast"}],
            "pools": [{"STATUS": [{"STATUS": "S"}], "POOLS": 7}],
            "stats": "none",
            "config": [[]],
            "power": [{"STATUS": [{"STATUS": "S"}], "POWER": [{"Watts": [1, 2]}]}],
        }
        return json.dumps(reply).encode() + b"\x00"
    if behaviour is Behaviour.NAN:
        return json.dumps(joined_reply(mhs_5s=float("nan"), watts=float("inf"))).encode() + b"\0"
    if behaviour is Behaviour.NEGATIVE:
        return json.dumps(joined_reply(mhs_5s=-1e24 * 1e6)).encode() + b"\x00"
    if behaviour is Behaviour.ABSURD:
        return json.dumps(joined_reply(mhs_5s=1e24, chip_temp=9999)).encode() + b"\x00"
    raise ValueError(f"{behaviour} sends no single document")


class HostileMiner:
    """Answers every cgminer-API connection on ``address``:``port`` with one behaviour."""

    def __init__(
        self, address: str, behaviour: Behaviour, port: int = 0, *, drip_seconds: float = 1.0
    ) -> None:
        self.address = address
        self.behaviour = behaviour
        self.drip_seconds = drip_seconds
        self.connections = 0
        self.bytes_sent = 0
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port it listens on (the bound one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> HostileMiner:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (idempotent)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.address, self._requested_port
            )

    async def stop(self) -> None:
        """Stop listening and drop every connection (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(BaseException):
                await task
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            with contextlib.suppress(asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
                await asyncio.wait_for(reader.read(64 * 1024), 5.0)  # the request
                await self._answer(writer)
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        behaviour = self.behaviour
        if behaviour is Behaviour.ENDLESS or behaviour is Behaviour.OVERSIZED:
            limit = 64 * 1024 * 1024 if behaviour is Behaviour.OVERSIZED else None
            writer.write(b"[")
            sent = 0
            while limit is None or sent < limit:
                writer.write(CHUNK)
                sent += len(CHUNK)
                self.bytes_sent += len(CHUNK)
                await writer.drain()  # raises once the client has gone
            writer.write(b"\x00")
            await writer.drain()
        elif behaviour is Behaviour.DRIP:
            for byte in json.dumps(joined_reply()).encode() + b"\x00":
                writer.write(bytes([byte]))
                self.bytes_sent += 1
                await writer.drain()
                await asyncio.sleep(self.drip_seconds)
        elif behaviour is Behaviour.RESET:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close sends RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        elif behaviour is Behaviour.NEVER_CLOSE:
            await asyncio.Event().wait()
        else:
            data = reply_bytes(behaviour)
            writer.write(data)
            self.bytes_sent += len(data)
            await writer.drain()
