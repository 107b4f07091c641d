"""Site meter over HTTP: GET a JSON object ``{"power_w": W, "energy_import_kwh": kWh?}``.

For meters and gateways with a JSON API (or a small shim in front of one).
The body is bounded (``MAX_METER_BODY_BYTES``), must be JSON of bounded shape,
and the power finite and plausible; anything else is a ``MalformedReply``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import httpx

from drivers.bounds import json_problem
from drivers.errors import MalformedReply, Timeout, Unavailable
from drivers.meter.base import MAX_SITE_POWER_W, MeterReading
from drivers.meter.maps import plausible_power_w

MAX_METER_BODY_BYTES = 16 * 1024


class HttpMeter:
    """Polls one URL that answers the site power as JSON."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "meter",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self._clock = clock
        self._client = client or httpx.AsyncClient(timeout=timeout_seconds)

    async def read(self) -> MeterReading:
        """One reading, or a DriverError."""
        try:
            async with self._client.stream("GET", self.url) as response:
                if response.status_code != 200:
                    raise Unavailable(self.name, f"HTTP {response.status_code}")
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_METER_BODY_BYTES:
                        raise MalformedReply(self.name, f"body over {MAX_METER_BODY_BYTES} bytes")
        except httpx.TimeoutException:
            raise Timeout(self.name, "no reply in time") from None
        except httpx.HTTPError as exc:
            raise Unavailable(self.name, f"HTTP: {type(exc).__name__}") from None
        return parse_reading(self.name, body, self._clock())

    def close(self) -> None:
        """Nothing to release synchronously (the client closes with the process)."""


def parse_reading(source: str, body: bytes, observed_at: float) -> MeterReading:
    """``{"power_w": ..., "energy_import_kwh": ...}`` as a reading, or MalformedReply."""
    if len(body) > MAX_METER_BODY_BYTES:
        raise MalformedReply(source, f"body over {MAX_METER_BODY_BYTES} bytes")
    problem = json_problem(body)
    if problem:
        raise MalformedReply(source, problem)
    try:
        data = json.loads(body, parse_constant=_reject)
    except ValueError as exc:
        raise MalformedReply(source, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedReply(source, "not a JSON object")
    power = data.get("power_w")
    if isinstance(power, bool) or not isinstance(power, int | float):
        raise MalformedReply(source, "power_w missing or not a number")
    if not plausible_power_w(float(power), MAX_SITE_POWER_W):
        raise MalformedReply(source, f"implausible site power {power!r} W")
    energy = data.get("energy_import_kwh")
    if energy is not None and (
        isinstance(energy, bool) or not isinstance(energy, int | float) or not math.isfinite(energy)
    ):
        raise MalformedReply(source, "energy_import_kwh not a number")
    return MeterReading(float(power), observed_at, None if energy is None else float(energy))


def _reject(name: str) -> float:
    raise ValueError(f"{name} is not a number")
