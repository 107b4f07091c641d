"""The HTTP layer every live market feed shares: deadlines, status codes, Retry-After, backoff.

Errors (all DriverError): ``Timeout`` (no complete reply in time), ``Unavailable``
(connection failed, 5xx, 429 with ``retry_after_seconds``, or still backing off),
``MalformedReply`` (truncated, non-JSON, too deep or over MAX_HTTP_BODY_BYTES body), ``Fatal`` (401/403: credentials).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from drivers.backoff import Backoff, RetryGate
from drivers.bounds import MAX_HTTP_BODY_BYTES, json_problem
from drivers.errors import Fatal, MalformedReply, Timeout, Unavailable


class RateLimited(Unavailable):
    """The server said 429 (or 503) and may have named a time to come back."""

    def __init__(self, source: str, message: str, retry_after_seconds: float | None) -> None:
        super().__init__(source, message)
        self.retry_after_seconds = retry_after_seconds


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header: delta seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class JsonEndpoint:
    """Requests one URL with a deadline and a retry gate; returns parsed JSON or raises."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        *,
        timeout_seconds: float = 5.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.client = client
        self.timeout_seconds = timeout_seconds
        self.gate = RetryGate(backoff or Backoff(2.0, 300.0), clock)

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """One request; on any failure the gate holds further tries back (jittered, capped)."""
        if not self.gate.ready():
            raise Unavailable(self.name, f"backing off for {self.gate.wait_seconds():.1f} s more")
        try:
            body = await self._request(method, url, **kwargs)
        except RateLimited as exc:
            self.gate.failed(exc.retry_after_seconds)
            raise
        except (Unavailable, Fatal):
            self.gate.failed()
            raise
        self.gate.succeeded()
        return body

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout_seconds):  # the whole exchange, body included
                async with self.client.stream(
                    method, url, timeout=self.timeout_seconds, **kwargs
                ) as response:
                    status = response.status_code
                    content = b""
                    if status < 400 or (status == 500 and method == "POST"):
                        content = await self._body(response)
        except TimeoutError as exc:
            raise Timeout(self.name, f"no complete reply in {self.timeout_seconds:g} s") from exc
        except httpx.TimeoutException as exc:
            raise Timeout(self.name, f"no complete reply in {self.timeout_seconds:g} s") from exc
        except httpx.HTTPError as exc:  # connection refused/reset, truncated body, protocol
            raise Unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        if status in (429, 503):
            wait = retry_after_seconds(response.headers.get("retry-after"))
            raise RateLimited(self.name, f"HTTP {status}", wait)
        if status in (401, 403):
            raise Fatal(self.name, f"HTTP {status}: check the credentials")
        if status >= 400 and not (status == 500 and method == "POST"):
            raise Unavailable(self.name, f"HTTP {status}")
        problem = json_problem(content)
        if problem is not None:
            raise MalformedReply(self.name, f"body is not JSON we take: {problem}")
        try:
            return json.loads(content, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            raise MalformedReply(self.name, f"body is not JSON: {exc}") from None

    async def _body(self, response: httpx.Response) -> bytes:
        """The body, at most MAX_HTTP_BODY_BYTES (MalformedReply beyond: the rest is not read)."""
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_HTTP_BODY_BYTES:
                del body
                raise MalformedReply(self.name, f"body larger than {MAX_HTTP_BODY_BYTES} bytes")
        return bytes(body)


def _no_constants(name: str) -> Any:
    """JSON NaN/Infinity are not numbers a feed may hand us."""
    raise ValueError(f"{name} is not a number")


def finite_number(source: str, value: Any, what: str) -> float:
    """A float from a JSON number or numeric string, or MalformedReply."""
    if isinstance(value, bool):
        raise MalformedReply(source, f"{what}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MalformedReply(source, f"{what}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise MalformedReply(source, f"{what}: not finite ({value!r})")
    return number
