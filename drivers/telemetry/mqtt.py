"""MQTT ingest: device samples, power prices and demand-response events into a sink (aiomqtt).

Topics (``prefix`` defaults to ``wattmux/<site>``):
``<prefix>/telemetry/<device_id>`` (one sample, QoS 0), ``<prefix>/telemetry/batch/<source>``
(a JSON array of samples, QoS 0), ``<prefix>/price/power`` and ``<prefix>/events/dr``
(QoS 1, kept by the broker on our persistent session while we are away), and
``<prefix>/status`` (ours, retained: ``online`` at birth, ``offline`` as last
will and on clean shutdown).  MQTT 5 is used so the broker drops queued or
retained messages whose message-expiry interval has passed.  One ``Supervisor``
reconnects with capped full-jitter backoff; refused credentials are Fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from drivers.backoff import Backoff, Sleep, Supervisor
from drivers.errors import Fatal, Unavailable
from drivers.secrets import reveal
from drivers.telemetry.messages import Decoder, Limits, MessageRejected
from scheduler.core.model import Event, Reading, Sample

log = logging.getLogger(__name__)

# CONNACK reason codes that retrying cannot fix (MQTT 3.1.1 and 5).
_FATAL_CODES = frozenset({4, 5, 133, 134, 135, 138, 140})
LOG_EVERY_SECONDS = 60.0
UNKNOWN_DEVICES_LOGGED = 1000  # unknown device ids logged once each; beyond these only counted


class MqttOptions(BaseModel):
    """The [mqtt] section: broker, credentials, TLS, limits."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="broker host")
    port: int = Field(1883, ge=1, le=65535)
    prefix: str | None = Field(None, description="topic prefix; default wattmux/<site name>")
    client_id: str | None = Field(None, description="default wattmux-<site name>")
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle for the broker's certificate")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    keepalive_seconds: int = Field(30, ge=5, le=3600)
    session_expiry_seconds: int = Field(
        86_400, ge=0, description="broker keeps our QoS 1 queue this long while we are away"
    )
    max_payload_bytes: int = Field(1 << 20, ge=256, le=256 << 20)
    max_sample_age_seconds: float = Field(60.0, gt=0, description="older samples are stale")
    max_clock_skew_seconds: float = Field(5.0, ge=0)
    max_price_lead_seconds: float = Field(
        300.0, ge=0, description="a price whose interval starts further ahead is refused (future)"
    )
    max_event_lead_seconds: float = Field(
        7 * 86_400.0, ge=0, description="a DR event that starts further ahead is refused (future)"
    )
    max_events: int = Field(
        1000, ge=1, le=1_000_000, description="DR events kept (active or future); more are refused"
    )
    price_floor_usd_per_mwh: float = Field(-251.0, description="ISO offer floor (ERCOT: -251)")
    price_cap_usd_per_mwh: float = Field(5000.0, description="ISO price cap (ERCOT: 5000)")
    push_devices: list[str] = Field(
        default_factory=list, description="device ids read only over MQTT (not polled)"
    )
    backoff_base_seconds: float = Field(0.5, gt=0, le=60)
    backoff_cap_seconds: float = Field(30.0, gt=0, le=3600)

    def limits(self) -> Limits:
        """The plausibility limits these options set."""
        return Limits(
            max_payload_bytes=self.max_payload_bytes,
            max_sample_age_seconds=self.max_sample_age_seconds,
            max_clock_skew_seconds=self.max_clock_skew_seconds,
            max_price_lead_seconds=self.max_price_lead_seconds,
            max_event_lead_seconds=self.max_event_lead_seconds,
            price_floor_usd_per_mwh=self.price_floor_usd_per_mwh,
            price_cap_usd_per_mwh=self.price_cap_usd_per_mwh,
        )


class IngestSink(Protocol):
    """Where decoded messages go (the daemon writes them into FleetState)."""

    def on_sample(self, sample: Sample) -> bool:
        """Take a sample; return False when the device is unknown."""
        ...

    def on_samples(self, samples: list[Sample]) -> list[Sample]:
        """Take a batch of samples; return those of unknown devices."""
        ...

    def on_power_price(self, reading: Reading, valid_from: datetime, valid_until: datetime) -> None:
        """Take a power price for the interval [valid_from, valid_until) it was published for."""
        ...

    def on_event(self, event: Event) -> None:
        """Take a demand-response event (new or updated by id); MessageRejected refuses it."""
        ...

    def on_rejected(self, reason: str) -> None:
        """Count one rejected message or batch entry."""
        ...


class _Dispatch(asyncio.Queue[aiomqtt.Message]):
    """A queue that is no queue: each message is handled as paho hands it over.

    aiomqtt's message iterator costs a task and an ``asyncio.wait`` per message;
    handling in ``put_nowait`` instead keeps ingest at fleet rate and means a price
    never waits behind a backlog of telemetry.  ``get`` never returns, so the
    iterator still reports a lost connection.
    """

    handler: Callable[[str, bytes], None]

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Handle the message now."""
        self.handler(item.topic.value, _payload(item.payload))

    async def get(self) -> aiomqtt.Message:
        """Wait forever (messages never queue here)."""
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")


class MqttIngest:
    """Subscribes, decodes and hands messages to a sink; an async context manager owning one task."""

    def __init__(
        self,
        options: MqttOptions,
        sink: IngestSink,
        *,
        site: str = "site",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.options = options
        self.sink = sink
        self.prefix = options.prefix or f"wattmux/{site}"
        self.client_id = options.client_id or f"wattmux-{site}"
        self.status_topic = f"{self.prefix}/status"
        self._telemetry = f"{self.prefix}/telemetry/"
        self._batch = f"{self.prefix}/telemetry/batch/"
        self._price = f"{self.prefix}/price/power"
        self._event = f"{self.prefix}/events/dr"
        self.decoder = Decoder(options.limits())
        self._clock = clock
        self._wall = wall_clock
        self._on_state = on_state
        self.supervisor = Supervisor(
            f"mqtt[{options.host}:{options.port}]",
            self._session,
            Backoff(options.backoff_base_seconds, options.backoff_cap_seconds),
            sleep=sleep,
        )
        self.received = 0
        self.connected = asyncio.Event()
        self._last_logged: dict[str, float] = {}
        self._unknown_logged: set[str] = set()
        self._unknown_overflow = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        """Start the supervisor task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self.supervisor.run(), name=f"mqtt[{self.prefix}].ingest"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop: publish ``offline``, disconnect, wait for the task."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _client(self) -> aiomqtt.Client:
        options = self.options
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = options.session_expiry_seconds
        tls_params = None
        if options.tls:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(options.ca_file) if options.ca_file else None,
                certfile=str(options.cert_file) if options.cert_file else None,
                keyfile=str(options.key_file) if options.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        handle = self._handle_guarded

        class Dispatch(_Dispatch):
            handler = staticmethod(handle)

        return aiomqtt.Client(
            options.host,
            options.port,
            queue_type=Dispatch,
            identifier=self.client_id,
            username=options.username,
            password=reveal(options.password),
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect,
            keepalive=options.keepalive_seconds,
            will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
            tls_params=tls_params,
            timeout=10.0,
        )

    async def _session(self, supervisor: Supervisor) -> None:
        """One connection: birth, subscribe, consume until it drops."""
        client = self._client()
        try:
            async with client:
                supervisor.connected()
                await client.publish(self.status_topic, b"online", qos=1, retain=True)
                await client.subscribe(
                    [
                        (f"{self.prefix}/telemetry/#", SubscribeOptions(qos=0)),
                        (self._price, SubscribeOptions(qos=1)),
                        (self._event, SubscribeOptions(qos=1)),
                    ]
                )
                self.connected.set()
                self._set_state(True)
                try:
                    async for _ in client.messages:  # handled in _Dispatch; ends on disconnect
                        pass
                except asyncio.CancelledError:
                    with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                        await client.publish(
                            self.status_topic, b"offline", qos=1, retain=True, timeout=2.0
                        )
                    raise
        except aiomqtt.MqttCodeError as exc:
            raise self._translate(exc) from exc
        except aiomqtt.MqttError as exc:
            raise Unavailable(self.supervisor.name, str(exc)) from exc
        finally:
            if self.connected.is_set():
                self.connected.clear()
                self._set_state(False)

    def _translate(self, exc: aiomqtt.MqttCodeError) -> Unavailable | Fatal:
        code: Any = exc.rc
        value = getattr(code, "value", code)
        if isinstance(value, int) and value in _FATAL_CODES:
            return Fatal(self.supervisor.name, f"broker refused us: {exc}")
        return Unavailable(self.supervisor.name, str(exc))

    def _set_state(self, up: bool) -> None:
        if self._on_state is not None:
            self._on_state(up)

    def _handle_guarded(self, topic: str, payload: bytes) -> None:
        """Handle inside paho's read callback: a bug is logged and counted, never kills the link."""
        try:
            self.handle(topic, payload)
        except Exception:
            log.exception("mqtt message on %s could not be handled", topic)
            self.sink.on_rejected("internal_error")

    def handle(self, topic: str, payload: bytes) -> None:
        """Decode one message and hand it to the sink; bad ones are counted and dropped."""
        self.received += 1
        try:
            if topic.startswith(self._batch):
                samples, rejected = self.decoder.batch(
                    topic[len(self._batch) :], payload, self._wall(), self._clock()
                )
                for sample in self.sink.on_samples(samples):
                    self._reject(
                        MessageRejected(sample.device_id, "unknown_device", "no such device")
                    )
                for problem in rejected:
                    self._reject(problem)
            elif topic.startswith(self._telemetry):
                device_id = topic[len(self._telemetry) :]
                sample = self.decoder.sample(device_id, payload, self._wall(), self._clock())
                if not self.sink.on_sample(sample):
                    raise MessageRejected(device_id, "unknown_device", "no such device")
            elif topic == self._price:
                wall = datetime.fromtimestamp(self._wall(), UTC)
                reading, msg = self.decoder.price(payload, wall, self._clock())
                self.sink.on_power_price(reading, msg.interval_start, msg.interval_end)
            elif topic == self._event:
                wall = datetime.fromtimestamp(self._wall(), UTC)
                self.sink.on_event(self.decoder.event(payload, wall))
            else:
                raise MessageRejected(topic, "unknown_topic", "not a topic wattmux reads")
        except MessageRejected as exc:
            self._reject(exc)

    def _reject(self, exc: MessageRejected) -> None:
        self.sink.on_rejected(exc.reason)
        if exc.reason == "unknown_device":
            self._unknown_device(exc.source)
            return
        now = self._clock()
        last = self._last_logged.get(exc.source)
        if last is None or now - last >= LOG_EVERY_SECONDS:
            if len(self._last_logged) > 10_000:
                self._last_logged.clear()
            self._last_logged[exc.source] = now
            log.warning("mqtt message rejected (%s): %s", exc.reason, exc)

    def _unknown_device(self, device_id: str) -> None:
        """Log each unknown device id once (a bounded set of them); the counter counts them all."""
        device_id = device_id[:128]
        logged = self._unknown_logged
        if device_id in logged or self._unknown_overflow:
            return
        if len(logged) >= UNKNOWN_DEVICES_LOGGED:
            self._unknown_overflow = True  # the set is full: one last line says so
            log.warning(
                "mqtt samples of more than %d unknown device ids; further ones are not logged,"
                ' only counted in wattmux_ingest_rejected_total{reason="unknown_device"}',
                UNKNOWN_DEVICES_LOGGED,
            )
            return
        logged.add(device_id)
        log.warning(
            "mqtt samples of unknown device %r are dropped (logged once per device id;"
            ' counted in wattmux_ingest_rejected_total{reason="unknown_device"})',
            device_id,
        )


def _payload(payload: Any) -> bytes:
    """Return the payload as bytes (aiomqtt hands bytes for binary payloads)."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return b"" if payload is None else str(payload).encode()
