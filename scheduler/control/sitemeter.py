"""``SiteMeter``: reads the configured site meter on its own task; the truth for site power.

The latest reading is used while younger than ``stale_seconds``; a failed read
is counted (``wattmux_site_meter_reads_total{outcome}``) and logged once until
the meter answers again.  The disagreement between the meter and the sum of
the miners' own reports is exported as a ratio (``wattmux_site_meter_disagreement_ratio``,
(meter - miners) / meter) for the alert in ``deploy/prometheus/grid-alerts.yml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from drivers.errors import DriverError, Unavailable
from drivers.meter.base import MeterReading, MeterSource
from drivers.meter.http import HttpMeter
from drivers.meter.maps import load_map
from drivers.meter.modbus import ModbusMeter
from scheduler.config.grid import MeterConfig
from scheduler.core.state import FleetState

log = logging.getLogger(__name__)


class PushedMeter:
    """A meter whose readings are pushed (MQTT): nothing to poll."""

    name = "meter"

    async def read(self) -> MeterReading:
        """Never polled (``SiteMeter.push`` takes the readings)."""
        raise Unavailable(self.name, "readings are pushed, not polled")

    def close(self) -> None:
        """Nothing to release."""


def meter_source(config: MeterConfig, clock: Callable[[], float] = time.monotonic) -> MeterSource:
    """The meter the config names."""
    if config.source == "mqtt":
        return PushedMeter()
    if config.source == "modbus":
        assert config.host is not None
        return ModbusMeter(
            config.host,
            config.port,
            load_map(config.map),
            unit_id=config.unit_id,
            timeout_seconds=config.timeout_seconds,
            clock=clock,
        )
    assert config.url is not None
    return HttpMeter(config.url, timeout_seconds=config.timeout_seconds, clock=clock)


class SiteMeter:
    """The latest site meter reading, refreshed every ``poll_seconds`` by ``run``."""

    def __init__(
        self,
        source: MeterSource,
        *,
        poll_seconds: float = 1.0,
        stale_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.poll_seconds = poll_seconds
        self.stale_seconds = stale_seconds
        self.clock = clock
        self.latest: MeterReading | None = None
        self.reads: dict[str, int] = {"ok": 0}
        self._up = True
        self.listeners: list[Callable[[MeterReading], None]] = []

    def power_w(self) -> float | None:
        """The metered site power, or None when no reading is younger than ``stale_seconds``."""
        reading = self.latest
        if reading is None or self.clock() - reading.observed_at > self.stale_seconds:
            return None
        return reading.power_w

    def observed_at(self) -> float | None:
        """When the latest reading was taken (the reader's monotonic clock)."""
        return None if self.latest is None else self.latest.observed_at

    def age_seconds(self) -> float | None:
        """Age of the latest reading."""
        return None if self.latest is None else self.clock() - self.latest.observed_at

    def push(self, reading: MeterReading) -> None:
        """A reading that arrived on its own (MQTT)."""
        self.reads["ok"] += 1
        self.latest = reading
        for listener in self.listeners:
            listener(reading)

    async def read_once(self) -> MeterReading | None:
        """Read the meter once; a failure is counted and logged once until it recovers."""
        try:
            reading = await self.source.read()
        except DriverError as exc:
            self.reads[exc.reason] = self.reads.get(exc.reason, 0) + 1
            if self._up:
                log.warning("site meter unavailable: %s", exc.message)
            self._up = False
            return None
        self.reads["ok"] += 1
        if not self._up:
            log.info("site meter answers again")
        self._up = True
        self.latest = reading
        for listener in self.listeners:
            listener(reading)
        return reading

    async def run(self, stop: asyncio.Event) -> None:
        """Read every ``poll_seconds`` until ``stop`` is set."""
        try:
            while not stop.is_set():
                started = self.clock()
                await self.read_once()
                remaining = self.poll_seconds - (self.clock() - started)
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), remaining)
        finally:
            self.source.close()


def miners_reported_w(state: FleetState) -> float:
    """The sum of the power the machines report themselves (estimated or measured)."""
    return math.fsum(s.power_w for s in state.samples.values())


def disagreement_ratio(metered_w: float | None, miners_w: float) -> float | None:
    """(meter - miners) / meter; None without a reading or with a meter at ~0 W."""
    if metered_w is None or abs(metered_w) < 1.0:
        return None
    return (metered_w - miners_w) / metered_w
