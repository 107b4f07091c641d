"""Async client for the Braiins OS public gRPC API: login token, pause/resume, power target.

Transport: grpclib (pure-Python gRPC over the ``h2`` HTTP/2 library) with the
table-driven codec of drivers/asic/bos_messages.py.  Chosen over grpcio +
protobuf + generated stubs because it is about a tenth of the size (wheels
about 0.7 MB with h2, hpack, hyperframe and multidict, against 7.7 MB for
grpcio and protobuf, 22 MB installed), needs no code generator, is typed
(mypy --strict), and runs on whatever asyncio loop the daemon uses (uvloop
included).  It is what other open-source Braiins OS clients use to speak to
this API.

One HTTP/2 connection per call (plaintext, port 50051 by default): commands
are rare and the read-back is a few calls a second at most, so nothing is
kept open between them.

Authentication: ``Login`` once per device; the token (from
``LoginResponse.token``, or the ``authorization`` response header on
firmware before API 1.1.0) is sent as ``authorization`` metadata.  It is
kept until ``timeout_s`` after its last use (the firmware slides the
validity with every request; a firmware that does not say gets
``token_ttl_seconds``), and a call refused with UNAUTHENTICATED logs in
again once and retries.

Errors map to drivers/errors.py: UNAUTHENTICATED on Login (a wrong password)
is Fatal, never retried in a loop; INVALID_ARGUMENT, OUT_OF_RANGE,
FAILED_PRECONDITION, PERMISSION_DENIED, UNIMPLEMENTED and NOT_FOUND are
Rejected (the firmware said no); no answer within ``timeout_seconds`` is
Timeout; refused, reset or UNAVAILABLE is Unavailable; bytes that do not
decode are MalformedReply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import h2.exceptions
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from drivers.asic import bos_messages as bos
from drivers.asic.protowire import Message, WireError
from drivers.errors import DriverError, Fatal, MalformedReply, Rejected, Timeout, Unavailable

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Message)

REFUSALS = frozenset(
    {
        Status.INVALID_ARGUMENT,
        Status.OUT_OF_RANGE,
        Status.FAILED_PRECONDITION,
        Status.PERMISSION_DENIED,
        Status.UNIMPLEMENTED,
        Status.NOT_FOUND,
        Status.ALREADY_EXISTS,
    }
)


class BosClient:
    """Calls the Braiins OS public API on many miners; one token per miner."""

    def __init__(
        self,
        *,
        port: int = bos.DEFAULT_PORT,
        username: str = "root",
        password: str = "",
        timeout_seconds: float = 3.0,
        token_ttl_seconds: float = 3540.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.port = port
        self._username = username
        self._password = password
        self._timeout = timeout_seconds
        self._token_ttl = token_ttl_seconds
        self._clock = clock
        self._codec = bos.BosCodec()
        self._tokens: dict[str, tuple[str, float, float]] = {}  # address -> token, ttl, last use
        self.logins = 0

    async def _raw(
        self,
        source: str,
        address: str,
        method: bos.Method,
        request: Message,
        metadata: dict[str, str] | None,
    ) -> tuple[Any, dict[str, Any]]:
        """One unary call: (reply, initial metadata); DriverError on any failure."""
        channel = Channel(address, self.port, codec=self._codec)
        try:
            async with asyncio.timeout(self._timeout):
                async with channel.request(
                    method.path, Cardinality.UNARY_UNARY, method.request, method.reply,
                    metadata=metadata,
                ) as stream:  # fmt: skip
                    await stream.send_message(request, end=True)
                    await stream.recv_initial_metadata()
                    reply = await stream.recv_message()
                    await stream.recv_trailing_metadata()
                    headers = dict(stream.initial_metadata or {})
        except TimeoutError as exc:
            raise Timeout(source, f"{method.name}: no reply within {self._timeout:g} s") from exc
        except GRPCError as exc:
            raise _mapped(source, method, exc) from exc
        except WireError as exc:
            raise MalformedReply(source, f"{method.name}: {exc}") from None
        except (NotImplementedError, AssertionError) as exc:  # grpclib: compressed, short message
            raise MalformedReply(source, f"{method.name}: bad message ({exc})") from None
        except (ProtocolError, StreamTerminatedError, h2.exceptions.ProtocolError) as exc:
            raise Unavailable(source, f"{method.name}: HTTP/2 failure: {exc}") from exc
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unavailable(source, f"cannot talk to {address}:{self.port}: {reason}") from exc
        finally:
            channel.close()
        if reply is None:
            raise MalformedReply(source, f"{method.name}: no reply message")
        return reply, headers

    async def login(self, source: str, address: str) -> str:
        """Log in and keep the token; Fatal when the credentials are refused."""
        request = bos.LoginRequest(self._username, self._password)
        try:
            reply, headers = await self._raw(source, address, bos.LOGIN, request, None)
        except Rejected as exc:
            raise Fatal(source, f"login refused: {exc.message}") from exc
        token = reply.token or headers.get("authorization", "")
        if not isinstance(token, str) or not token:
            raise MalformedReply(source, "Login: no token in the reply or its headers")
        ttl = float(reply.timeout_s) if reply.timeout_s else self._token_ttl
        self._tokens[address] = (token, ttl, self._clock())
        self.logins += 1
        logger.debug("%s: logged in to the Braiins OS API (token for %g s)", source, ttl)
        return token

    async def call(self, source: str, address: str, method: bos.Method, request: Message) -> Any:
        """Call ``method`` with a token (log in first when none is fresh; once more on expiry)."""
        kept = self._tokens.get(address)
        now = self._clock()
        fresh = kept is not None and now - kept[2] < kept[1] * 0.95
        token = kept[0] if kept is not None and fresh else await self.login(source, address)
        try:
            reply, _ = await self._raw(source, address, method, request, {"authorization": token})
        except _Unauthenticated:
            self._tokens.pop(address, None)
            token = await self.login(source, address)
            try:
                reply, _ = await self._raw(
                    source, address, method, request, {"authorization": token}
                )
            except _Unauthenticated as again:
                raise Fatal(
                    source, f"{method.name}: fresh token refused: {again.message}"
                ) from None
        self._tokens[address] = (token, self._tokens[address][1], self._clock())
        return reply

    async def pause(self, source: str, address: str) -> bool:
        """PauseMining; True when the miner says it was already paused."""
        reply = await self.call(source, address, bos.PAUSE, bos.Empty())
        return bool(reply.already_paused)

    async def resume(self, source: str, address: str) -> bool:
        """ResumeMining; True when the miner says it was already mining."""
        reply = await self.call(source, address, bos.RESUME, bos.Empty())
        return bool(reply.already_mining)

    async def set_power_target(self, source: str, address: str, watts: int) -> int | None:
        """SetPowerTarget (save and apply); the target the miner answers with."""
        request = bos.SetPowerTargetRequest(bos.SaveAction.SAVE_AND_APPLY, bos.Power(watts))
        reply = await self.call(source, address, bos.SET_POWER_TARGET, request)
        return None if reply.power_target is None else int(reply.power_target.watt)

    async def status(self, source: str, address: str) -> bos.MinerStatus | int:
        """GetMinerDetails.status (an int when the firmware sends a value unknown here)."""
        reply = await self.call(source, address, bos.GET_MINER_DETAILS, bos.Empty())
        try:
            return bos.MinerStatus(reply.status)
        except ValueError:
            return int(reply.status)

    async def power_range_w(self, source: str, address: str) -> tuple[int, int, int] | None:
        """The model's power target (default, min, max) in W from GetConstraints; None if absent."""
        reply = await self.call(source, address, bos.GET_CONSTRAINTS, bos.Empty())
        tuner = reply.tuner_constraints
        power = tuner.power_target if tuner is not None else None
        if power is None or None in (power.default, power.min, power.max):
            return None
        return int(power.default.watt), int(power.min.watt), int(power.max.watt)

    async def power_target_w(self, source: str, address: str) -> int | None:
        """The tuner's power target in force (None when the tuner is not in power-target mode)."""
        reply = await self.call(source, address, bos.GET_TUNER_STATE, bos.Empty())
        state = reply.power_target_mode_state
        if state is None or state.current_target is None:
            return None
        return int(state.current_target.watt)


class _Unauthenticated(Rejected):
    """A call refused for its token (internal: log in again once)."""


def _mapped(source: str, method: bos.Method, exc: GRPCError) -> DriverError:
    detail = f"{method.name}: {exc.status.name} {exc.message or ''}".rstrip()
    if exc.status is Status.UNAUTHENTICATED:
        return _Unauthenticated(source, detail)
    if exc.status in REFUSALS:
        return Rejected(source, detail)
    if exc.status is Status.DEADLINE_EXCEEDED:
        return Timeout(source, detail)
    return Unavailable(source, detail)
