"""Dispatch base points over MQTT: ``<prefix>/grid/basepoint`` carries ``{"id", "kw", "hold_seconds"?}``.

With ``on_meter`` the same connection also takes site meter readings pushed on
``<prefix>/grid/meter`` (``{"power_w": W}``, decoded by ``drivers.meter.http.parse_reading``).

A stream of site power targets (an ISO's SCED base points relayed by a QSE,
an aggregator's dispatch), one message per point, every 5 minutes or faster.
Each point is decoded with bounds (payload size, JSON shape, a finite kW in
range, an id of at most 128 safe characters) and handed to ``on_point``;
anything else goes to ``on_reject`` with a reason and is never acted on.
The connection uses the ``[mqtt]`` broker settings with its own client id and
reconnects with capped backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from drivers.bounds import json_problem
from drivers.secrets import reveal
from drivers.telemetry.mqtt import MqttOptions

log = logging.getLogger(__name__)
MAX_BASEPOINT_BYTES = 4096
MAX_KW = 1e7
_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


@dataclass(frozen=True, slots=True)
class BasePoint:
    """One dispatch base point."""

    id: str
    kw: float
    hold_seconds: float | None = None


class BasePointRejected(ValueError):
    """A message that is not a base point; ``reason`` for the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_basepoint(payload: bytes) -> BasePoint:
    """The base point in a message, or BasePointRejected."""
    if len(payload) > MAX_BASEPOINT_BYTES:
        raise BasePointRejected("too_large")
    if json_problem(payload):
        raise BasePointRejected("malformed")
    try:
        data = json.loads(payload, parse_constant=_reject)
    except ValueError:
        raise BasePointRejected("malformed") from None
    if not isinstance(data, dict) or set(data) - {"id", "kw", "hold_seconds"}:
        raise BasePointRejected("malformed")
    point_id, kw, hold = data.get("id"), data.get("kw"), data.get("hold_seconds")
    if not isinstance(point_id, str) or not _ID.match(point_id):
        raise BasePointRejected("bad_id")
    if isinstance(kw, bool) or not isinstance(kw, int | float) or not 0 <= kw <= MAX_KW:
        raise BasePointRejected("bad_kw")
    if hold is not None and (
        isinstance(hold, bool)
        or not isinstance(hold, int | float)
        or not (math.isfinite(hold) and 0 < hold <= 7 * 86400)
    ):
        raise BasePointRejected("bad_hold")
    return BasePoint(point_id, float(kw), None if hold is None else float(hold))


def _reject(name: str) -> float:
    raise ValueError(name)


class BasePointSubscriber:
    """Subscribes to the base-point topic until closed (``async with``)."""

    def __init__(
        self,
        options: MqttOptions,
        site: str,
        on_point: Callable[[BasePoint], None],
        on_reject: Callable[[str], None],
        *,
        on_meter: Callable[[bytes], None] | None = None,
    ) -> None:
        self.options = options
        self.topic = f"{options.prefix or f'wattmux/{site}'}/grid/basepoint"
        self.client_id = f"{options.client_id or f'wattmux-{site}'}-basepoints"
        self.meter_topic = f"{options.prefix or f'wattmux/{site}'}/grid/meter"
        self.on_point = on_point
        self.on_reject = on_reject
        self.on_meter = on_meter
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> aiomqtt.Client:
        options = self.options
        tls_params = None
        if options.tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(options.ca_file) if options.ca_file else None,
                certfile=str(options.cert_file) if options.cert_file else None,
                keyfile=str(options.key_file) if options.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        return aiomqtt.Client(
            options.host,
            options.port,
            identifier=self.client_id,
            username=options.username,
            password=reveal(options.password),
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=options.keepalive_seconds,
            tls_params=tls_params,
            timeout=10.0,
        )

    def handle(self, payload: bytes) -> None:
        """Decode one message and hand it on (or reject it)."""
        try:
            point = decode_basepoint(payload)
        except BasePointRejected as exc:
            self.on_reject(exc.reason)
            return
        self.on_point(point)

    async def _run(self) -> None:
        delay = self.options.backoff_base_seconds
        while True:
            try:
                async with self._client() as client:
                    await client.subscribe(self.topic, qos=1)
                    if self.on_meter is not None:
                        await client.subscribe(self.meter_topic, qos=0)
                    self.connected.set()
                    delay = self.options.backoff_base_seconds
                    async for message in client.messages:
                        payload = message.payload
                        raw = payload if isinstance(payload, bytes) else b""
                        if self.on_meter is not None and message.topic.matches(self.meter_topic):
                            self.on_meter(raw)
                        else:
                            self.handle(raw)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("base points: MQTT %s; again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff_cap_seconds)

    async def __aenter__(self) -> BasePointSubscriber:
        self._task = asyncio.create_task(self._run(), name="grid.basepoints")
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
