"""Async client for the cgminer-family API: one command per TCP connection, JSON reply.

The client writes ``{"command": ..., "parameter": ...}``; the miner answers one
JSON document, usually NUL-terminated (some builds omit the NUL and just
close), then closes.  Replies are decoded leniently where firmware is known to
be sloppy (bmminer: ``}{`` with no comma between STATS objects, trailing commas,
bare ``nan``/``inf``) and strictly everywhere else.  A STATUS of ``E`` or ``F``
(including cgminer's "Access denied" for privileged commands) raises Rejected.

Concurrency: at most ``concurrency`` connections at once.  Commands sent inside
``with client.ahead():`` (a driver's writes) take the next free connection before
any waiting read (polls, read-backs), so a fleet-wide curtail reaches every
miner first and is verified after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, cast

import msgspec

from drivers.bounds import MAX_REPLY_BYTES, json_problem
from drivers.errors import MalformedReply, Rejected, Timeout, Unavailable
from drivers.slots import Slots

Reply = dict[str, Any]


# Repairs for known firmware slips, tried in order only when strict parsing fails.
_REPAIRS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"}\s*{"), "},{"),  # bmminer stats: no comma between objects
    (re.compile(r",\s*([}\]])"), r"\1"),  # trailing comma before } or ]
    (re.compile(r"(?<=[:\[,])\s*-?(?:nan|inf)\b", re.IGNORECASE), "null"),  # bare nan / inf
)


_fast_decode = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode  # {"command": ..., "parameter": ...} as compact JSON


def decode_reply(raw: bytes, source: str) -> Reply:
    """Decode one reply (NUL already stripped) into a JSON object or raise MalformedReply.

    Before any parser sees it, the reply is checked against drivers/bounds.py
    (nesting depth, digits in a number, string length): nothing a miner sends
    raises anything but MalformedReply.
    """
    problem = json_problem(raw)
    if problem is not None:
        raise MalformedReply(source, f"reply {problem}")
    try:
        value = _fast_decode.decode(raw)  # well-formed JSON: the common case, in C
    except (msgspec.DecodeError, RecursionError):
        value = _decode_lenient(raw, source)
    if not isinstance(value, dict):
        raise MalformedReply(source, f"reply is a JSON {type(value).__name__}, not an object")
    return value


def _decode_lenient(raw: bytes, source: str) -> Any:
    """Decode what strict JSON refuses: bad UTF-8, raw control characters, firmware slips."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        return json.loads(text, strict=False)  # strict=False: raw control chars in strings
    except json.JSONDecodeError as exc:
        reason = f"reply is not JSON ({exc.msg} at {exc.pos})"
    except (ValueError, RecursionError) as exc:  # beyond what json_problem bounds
        raise MalformedReply(source, f"reply is not JSON ({type(exc).__name__})") from None
    repaired = text
    del text
    for pattern, replacement in _REPAIRS:
        repaired = pattern.sub(replacement, repaired)
    try:
        return json.loads(repaired, strict=False)
    except (ValueError, RecursionError):
        # from None: the exception would keep the reply's text alive through its frames
        raise MalformedReply(source, reason) from None


def status_entry(reply: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Return the STATUS block of a reply (a list in cgminer, inline in Whatsminer)."""
    status = reply.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], dict):
        return status[0]
    if isinstance(status, str):
        return reply
    return None


def raise_for_status(reply: Mapping[str, Any], source: str, command: str) -> None:
    """Raise Rejected when the reply's STATUS is E (error) or F (fatal)."""
    entry = status_entry(reply)
    if entry is not None and entry.get("STATUS") in ("E", "F"):
        message = entry.get("Msg", "error")
        raise Rejected(source, f"{command}: {message} (code {entry.get('Code')})")


_AHEAD: ContextVar[bool] = ContextVar("cgminer_client_ahead", default=False)


class CgminerClient:
    """Sends one command per TCP connection and decodes the (NUL-terminated) JSON reply."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 3.0,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        concurrency: int | None = None,
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_reply_bytes = max_reply_bytes
        self._slots = Slots(concurrency) if concurrency else None

    @staticmethod
    @contextlib.contextmanager
    def ahead() -> Iterator[None]:
        """Commands sent in this block (this task only) go before waiting reads."""
        token = _AHEAD.set(True)
        try:
            yield
        finally:
            _AHEAD.reset(token)

    async def command(
        self,
        address: str,
        port: int,
        command: str,
        parameter: str | None = None,
        *,
        source: str | None = None,
    ) -> Reply:
        """Run one command; raise Timeout, Unavailable, MalformedReply or Rejected on failure."""
        source = source or f"{address}:{port}"
        request: Reply = {"command": command}
        if parameter is not None:
            request["parameter"] = parameter
        raw = await self._slotted(address, port, _encode(request), source)
        reply = decode_reply(raw, source)
        if "+" not in command and status_entry(reply) is None:
            raise MalformedReply(source, f"{command}: reply has no STATUS")
        raise_for_status(reply, source, command)
        return reply

    async def send(self, address: str, port: int, payload: bytes, *, source: str) -> Reply:
        """Send a pre-built request (Whatsminer's encrypted envelope); decode, check nothing."""
        return decode_reply(await self._slotted(address, port, payload, source), source)

    async def _slotted(self, address: str, port: int, payload: bytes, source: str) -> bytes:
        slots = self._slots
        if slots is None:
            return await self._exchange(address, port, payload, source)
        await slots.acquire(_AHEAD.get())
        try:
            return await self._exchange(address, port, payload, source)
        finally:
            slots.release()

    async def _exchange(self, address: str, port: int, payload: bytes, source: str) -> bytes:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        protocol = _ReplyProtocol(payload, done, self.max_reply_bytes)
        transport: asyncio.BaseTransport | None = None
        # One timer for connect and reply, as asyncio.timeout() would set, without its
        # context-manager objects (30,000 connections in a fleet-wide curtail).
        deadline = _Deadline(asyncio.current_task())
        timer = loop.call_later(self.timeout_seconds, deadline.expire)
        try:
            transport, _ = await loop.create_connection(lambda: protocol, address, port)
            raw = await done
        except asyncio.CancelledError as exc:
            if deadline.expired and deadline.uncancel() == 0:  # our timer, nobody else's
                raise Timeout(
                    source, f"no complete reply within {self.timeout_seconds:g} s"
                ) from exc
            raise
        except _ClosedSilently as exc:
            raise Unavailable(source, "closed without replying") from exc
        except OSError as exc:  # refused, reset, unreachable
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unavailable(source, f"cannot talk to {address}:{port}: {reason}") from exc
        finally:
            timer.cancel()
            if transport is not None:
                transport.close()
            # A deadline inside create_connection leaves ``done`` unawaited: the protocol may
            # still fail it when asyncio closes the half-made connection.  Settle it here so no
            # "exception was never retrieved" reaches the log.
            if not done.done():
                done.cancel()
            elif not done.cancelled():
                done.exception()
            # Whatever happened, the protocol keeps no bytes: an exception's traceback may
            # keep this frame (and so the protocol) alive in a reference cycle for a while.
            protocol.release()
        if protocol.too_large:  # raised here, outside any except: no exception chained to it
            raise MalformedReply(source, f"reply larger than {self.max_reply_bytes} bytes")
        if not raw:
            raise MalformedReply(source, "empty reply")
        return raw


class _Deadline:
    """Cancels the task when the timer fires and remembers that it did."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        if task is None:
            raise RuntimeError("CgminerClient commands must run in a task")
        self.task = task
        self.expired = False

    def expire(self) -> None:
        """The deadline passed: cancel the command's task."""
        self.expired = True
        self.task.cancel()

    def uncancel(self) -> int:
        """Withdraw our cancellation; the count of cancellations still pending."""
        return self.task.uncancel()


class _ClosedSilently(OSError):
    """The miner closed without a byte (internal; becomes Unavailable)."""


class _ReplyProtocol(asyncio.Protocol):
    """Writes the request, collects bytes up to the NUL (or EOF), resolves ``done``."""

    def __init__(self, payload: bytes, done: asyncio.Future[bytes], limit: int) -> None:
        self._payload = payload
        self._done = done
        self._limit = limit
        self._buffer = bytearray()
        self._transport: asyncio.BaseTransport | None = None
        self.too_large = False  # the reply passed ``limit``: reading stopped, bytes dropped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the request as soon as the connection is up."""
        self._transport = transport
        # uvloop's transports are not asyncio.Transport subclasses: cast, do not check.
        cast(asyncio.WriteTransport, transport).write(self._payload)

    def release(self) -> None:
        """Drop the bytes collected and the transport (every exit of a command)."""
        self._buffer = bytearray()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        """Collect reply bytes; finish at the NUL terminator."""
        if self._done.done():
            return
        end = data.find(b"\x00")
        self._buffer += data if end < 0 else data[:end]
        if len(self._buffer) > self._limit:
            self.too_large = True
            self._buffer = bytearray()
            if self._transport is not None:
                cast(asyncio.Transport, self._transport).abort()  # a miner may never stop
            self._done.set_result(b"")
        elif end >= 0:
            self._done.set_result(bytes(self._buffer))

    def eof_received(self) -> bool | None:
        """A reply without NUL ends at EOF."""
        self._finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Finish with what arrived, or fail when nothing did."""
        if exc is not None and not self._done.done() and not self._buffer:
            self._done.set_exception(exc)
        self._finish()

    def _finish(self) -> None:
        if self._done.done():
            return
        if self._buffer:
            self._done.set_result(bytes(self._buffer))
        else:
            self._done.set_exception(_ClosedSilently(0, "closed without replying"))
