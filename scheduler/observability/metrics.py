"""Prometheus exposition: fleet and market gauges read at scrape time, plus the loop's counters.

``Metrics`` owns its own CollectorRegistry (never the process-wide default).
The fleet collector keeps no state of its own: each scrape reads FleetState,
so a value can never lag behind what the loop knows.  The counters and
gauges the loop updates (decisions, commands, poll errors, ...) are plain
attributes of ``Metrics``.  The per-device families (``wattmux_device_*``)
bypass prometheus_client and are written by ``scheduler.observability.exposition`` (the
fast path that keeps a 10,000-device scrape well under 150 ms).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from drivers.errors import DriverError
from scheduler.core.economics import breakeven_usd_per_mwh, hashprice_usd_per_th_day
from scheduler.core.model import (
    MARKET_INPUTS,
    Device,
    MarketState,
    OutcomeStatus,
    Plan,
    WorkloadKind,
)
from scheduler.core.state import FleetState
from scheduler.observability.exposition import DeviceExposition
from scheduler.observability.metrics_gpu import GpuQueueCollector

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""Content type of ``Metrics.render()`` output (Prometheus text format 0.0.4)."""

TICK_BUCKETS_SECONDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Market gauges: MarketState field -> (metric name, help).
MARKET_GAUGES: Final[tuple[tuple[str, str, str], ...]] = (
    ("btc_price_usd", "wattmux_btc_price_usd", "Latest BTC price in USD."),
    ("difficulty", "wattmux_network_difficulty", "Latest bitcoin network difficulty."),
    ("block_subsidy_btc", "wattmux_block_subsidy_btc", "Block subsidy in BTC."),
    ("fees_btc_per_block", "wattmux_fees_btc_per_block", "Average fees per block in BTC."),
    (
        "power_price_usd_per_mwh",
        "wattmux_power_price_usd_per_mwh",
        "Latest power price in USD/MWh.",
    ),
)

# Device states counted by wattmux_devices; every device is in exactly one.
DEVICE_STATES: Final = ("mining", "ai", "sleeping", "off", "unreachable")
_STATE_OF_KIND: Final = {
    WorkloadKind.MINE: "mining",
    WorkloadKind.AI: "ai",
    WorkloadKind.SLEEP: "sleeping",
    WorkloadKind.OFF: "off",
}
_DESIRED_KINDS: Final = tuple(kind.value for kind in WorkloadKind)


# wattmux_poll_errors_total{reason}: a device's I/O raised something that is not a
# DriverError (a parser bug, RecursionError, ...); contained at the device's boundary.
INTERNAL_ERROR_REASON: Final = "internal"


def driver_error_reasons() -> tuple[str, ...]:
    """Return every DriverError.reason value in the error tree, sorted."""
    reasons: set[str] = set()
    pending: list[type[DriverError]] = [DriverError]
    while pending:
        cls = pending.pop()
        reasons.add(cls.reason)
        pending.extend(cls.__subclasses__())
    return tuple(sorted(reasons))


def hashprice_from_market(market: MarketState, pool_fee: float) -> float | None:
    """Return hashprice in USD per TH/s per day, or None when it cannot be computed.

    Needs BTC price, difficulty and block subsidy (fees count as 0 when
    missing); values that are not finite, a difficulty <= 0 or a negative
    price, subsidy or fee make it not computable.
    """
    if market.btc_price_usd is None or market.difficulty is None:
        return None
    if market.block_subsidy_btc is None:
        return None
    btc_price = market.btc_price_usd.value
    difficulty = market.difficulty.value
    subsidy = market.block_subsidy_btc.value
    fees = 0.0 if market.fees_btc_per_block is None else market.fees_btc_per_block.value
    values = (btc_price, difficulty, subsidy, fees)
    if not all(math.isfinite(v) for v in values) or min(btc_price, subsidy, fees) < 0:
        return None
    try:
        result = hashprice_usd_per_th_day(difficulty, btc_price, subsidy, fees, pool_fee)
    except ValueError:
        return None
    return result if math.isfinite(result) else None


class FleetCollector(Collector):
    """Builds the fleet and market gauges from FleetState on every scrape."""

    def __init__(self, state: FleetState, clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock
        self.plan_source: Callable[[], Plan | None] | None = None

    def describe(self) -> Iterable[Metric]:
        """Return the families (without samples) so the registry can check name clashes."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        """Read FleetState now and return every fleet and market family."""
        families = self._families()
        self._fill(families, self._clock())
        return list(families.values())

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        """Create the empty families in exposition order."""
        specs: list[tuple[str, str, list[str]]] = [
            ("wattmux_site_power_watts", "Power drawn by all reachable devices.", []),
            ("wattmux_devices", "Devices per state.", ["state"]),
            (
                "wattmux_devices_not_at_desired",
                "Reachable devices not yet running the workload kind the scheduler wants, by that kind.",
                ["desired"],
            ),
            (
                "wattmux_breakeven_power_price_usd_per_mwh",
                "Power price above which a model's mining loses money, at the current hashprice.",
                ["model"],
            ),
            (
                "wattmux_plan_margin_usd_per_hour",
                "Expected margin of the current plan summed over all devices.",
                [],
            ),
        ]
        specs.extend((name, doc, []) for _, name, doc in MARKET_GAUGES)
        specs.append(
            (
                "wattmux_hashprice_usd_per_th_day",
                "USD earned per TH/s per day, net of pool fee.",
                [],
            )
        )
        specs.append(
            (
                "wattmux_market_input_age_seconds",
                "Seconds since each market input was observed.",
                ["input"],
            )
        )
        return {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in specs}

    def _fill(self, families: dict[str, GaugeMetricFamily], now: float) -> None:
        """Add the samples FleetState holds at monotonic time ``now``."""
        state = self._state
        counts = dict.fromkeys(DEVICE_STATES, 0)
        not_at_desired = dict.fromkeys(_DESIRED_KINDS, 0)
        models: dict[str, Device] = {}
        site_power_w = 0.0
        for device_id, device in state.devices.items():
            models.setdefault(device.model, device)
            status = state.status.get(device_id)
            sample = state.samples.get(device_id)
            if status is None or not status.reachable or sample is None:
                counts["unreachable"] += 1
                continue
            counts[_STATE_OF_KIND[sample.workload.kind]] += 1
            site_power_w += sample.power_w
            desired = state.desired.get(device_id)
            if desired is not None and desired.kind is not sample.workload.kind:
                not_at_desired[desired.kind.value] += 1
        families["wattmux_site_power_watts"].add_metric([], site_power_w)
        for name in DEVICE_STATES:
            families["wattmux_devices"].add_metric([name], float(counts[name]))

        market = state.market
        for field, metric_name, _ in MARKET_GAUGES:
            reading = getattr(market, field)
            if reading is not None:
                families[metric_name].add_metric([], reading.value)
        hashprice = hashprice_from_market(market, state.pool_fee)
        if hashprice is not None:
            families["wattmux_hashprice_usd_per_th_day"].add_metric([], hashprice)
            for model in sorted(models):
                families["wattmux_breakeven_power_price_usd_per_mwh"].add_metric(
                    [model],
                    breakeven_usd_per_mwh(hashprice, models[model].efficiency_j_per_th),
                )
        for kind in _DESIRED_KINDS:
            families["wattmux_devices_not_at_desired"].add_metric(
                [kind], float(not_at_desired[kind])
            )
        plan = self.plan_source() if self.plan_source is not None else None
        if plan is not None:
            families["wattmux_plan_margin_usd_per_hour"].add_metric(
                [], math.fsum(a.expected_margin_usd_per_hour for a in plan.assignments)
            )
        for field in MARKET_INPUTS:
            age = market.age(field, now)
            if age is not None:
                families["wattmux_market_input_age_seconds"].add_metric([field], age)


class Metrics:
    """The daemon's metrics: a private registry, the fleet collector and the loop's counters."""

    content_type: Final = CONTENT_TYPE

    def __init__(
        self,
        state: FleetState,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = FleetCollector(state, clock)
        self.registry.register(self.collector)
        self.registry.register(GpuQueueCollector(state))
        self.decisions = Counter(
            "wattmux_decisions",
            "Assignment changes decided, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.commands = Counter(
            "wattmux_commands",
            "Commands sent to devices, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OutcomeStatus:
            self.commands.labels(outcome=outcome.value)
        self.poll_errors = Counter(
            "wattmux_poll_errors",
            "Failed device polls, by DriverError reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in (*driver_error_reasons(), INTERNAL_ERROR_REASON):
            self.poll_errors.labels(reason=reason)
        self.source_up = Gauge(
            "wattmux_source_up",
            "1 if the feed's last fetch succeeded, else 0.",
            ["source"],
            registry=self.registry,
        )
        self.pool_up = Gauge(
            "wattmux_pool_up",
            "1 if some miner that lists the pool sees it alive (after the recovery dwell), else 0.",
            ["pool"],
            registry=self.registry,
        )
        self.ticks = Counter("wattmux_ticks", "Control loop ticks run.", registry=self.registry)
        self.tick_duration = Histogram(
            "wattmux_tick_duration_seconds",
            "Time one control loop tick took.",
            buckets=TICK_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.ingest_rejected = Counter(
            "wattmux_ingest_rejected",
            "Telemetry messages dropped as malformed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.api_rejected = Counter(
            "wattmux_api_rejected",
            "API requests refused before reaching a handler, by HTTP status.",
            ["status"],
            registry=self.registry,
        )

        self.command_retries = Counter(
            "wattmux_command_retries",
            "Commands sent again because the device did not confirm the last one.",
            registry=self.registry,
        )
        self.devices_drifted = Gauge(
            "wattmux_devices_drifted",
            "Devices whose last command is not confirmed (retrying or backing off).",
            registry=self.registry,
        )
        self.devices_drifted.set_function(lambda: len(state.drift))
        self.site_power_cap = Gauge(
            "wattmux_site_power_cap_watts",
            "Configured site power cap.",
            registry=self.registry,
        )
        self.stale_price_threshold = Gauge(
            "wattmux_stale_price_threshold_seconds",
            "Age after which the guard treats the power price as stale.",
            registry=self.registry,
        )
        self._clock = clock
        self.device_exposition = DeviceExposition(state)

    def watch_plan(self, plan_source: Callable[[], Plan | None]) -> None:
        """Read the current plan from plan_source at every scrape (its expected margin)."""
        self.collector.plan_source = plan_source

    def render(self) -> bytes:
        """Return the whole exposition: the registry, then the fast per-device families."""
        parts = self.device_exposition.render_parts(self._clock())
        parts.insert(0, generate_latest(self.registry).decode())
        return "".join(parts).encode()
