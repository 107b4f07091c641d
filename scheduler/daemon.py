"""The daemon: composes inputs, loop, reconciler, store, metrics and API in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from drivers.asic.registry import AsicDriver, create_asic_driver
from drivers.base import MarketFeed
from drivers.limits import raise_open_files_limit
from drivers.market.registry import FeedContext, build_market_feeds
from drivers.queues.registry import QueueNodeDriver
from drivers.secrets import settings_key
from drivers.telemetry.mqtt import MqttIngest
from scheduler.api.app import create_app, serve
from scheduler.api.connections import ConnectionLimits, connection_cap
from scheduler.api.grid import grid_routes
from scheduler.api.wiring import security_from_config
from scheduler.config.devices import pools_of
from scheduler.config.schema import WattmuxConfig
from scheduler.console.hub import ConsoleHub
from scheduler.console.locations import load_locations
from scheduler.console.web import console_routes
from scheduler.control.failsafe import curtail_all
from scheduler.control.grid import GridControl, grid_audit
from scheduler.control.ingest import POWER_PRICE, FleetSink
from scheduler.control.loop import ControlLoop
from scheduler.control.memory import StartupFreezer, heap_trimmer
from scheduler.control.queues import build_queues
from scheduler.control.service import (
    ControlledGuard,
    ControlledPolicy,
    ControlledReconciler,
    ControlService,
)
from scheduler.control.systemd import SystemdHeartbeat, SystemdNotifier, watchdog_seconds
from scheduler.control.watchdog import LoopWatchdog
from scheduler.core.model import Plan
from scheduler.core.state import FleetState
from scheduler.observability.gpu_telemetry import GpuTelemetry
from scheduler.observability.metrics import Metrics
from scheduler.policies import available_policies, create_policy
from scheduler.store.operator import ControlStore, RefusedAuditRetention

log = logging.getLogger(__name__)
_Driver = TypeVar("_Driver")


def build_feeds(
    config: WattmuxConfig, clock: Callable[[], float], http: httpx.AsyncClient | None = None
) -> list[MarketFeed]:
    """Market feeds named in [[market]]; the replay also brings the BTC days it covers.

    Live HTTP feeds share ``http``, which the caller owns and closes.
    """
    context = FeedContext(clock=clock, timezone=config.site.timezone, http=http)
    return build_market_feeds(config.market, context)


class Daemon:
    """One running wattmux: what the API reads (state, metrics, plan) and the composition."""

    def __init__(
        self,
        config: WattmuxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        feeds: Sequence[MarketFeed] | None = None,
        notifier: SystemdNotifier | None = None,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.config = config
        self.exit_process = exit_process  # what the stuck-loop watchdog calls after the failsafe
        self.notifier = notifier if notifier is not None else SystemdNotifier.from_environ()
        self.clock = clock
        self.state = FleetState(
            config.all_devices(),
            pool_fee=config.economics.pool_fee,
            power_cap_w=config.site.power_cap_kw * 1000,
        )
        self.state.set_leases(lease.lease() for lease in config.leases)
        self.metrics = Metrics(self.state, clock=clock)
        self.metrics.watch_plan(self.current_plan)
        self.metrics.site_power_cap.set(config.site.power_cap_kw * 1000)
        self.metrics.stale_price_threshold.set(config.guard.stale_price_seconds)
        self.http = httpx.AsyncClient(headers={"User-Agent": "wattmux"})
        self.feeds = list(feeds) if feeds is not None else build_feeds(config, clock, self.http)
        self.loop: ControlLoop | None = None
        self.ready = asyncio.Event()
        self.sink = FleetSink(
            self.state,
            self.metrics,
            max_events=config.mqtt.max_events if config.mqtt is not None else 1000,
        )
        self.ingest = (
            MqttIngest(config.mqtt, self.sink, site=config.site.name, clock=clock)
            if config.mqtt is not None
            else None
        )
        self.gpu_telemetry = (
            GpuTelemetry(config.gpu_telemetry, self.metrics, self.http)
            if config.gpu_telemetry is not None
            else None
        )
        self.control: ControlService | None = None
        self.console: ConsoleHub | None = None  # the console's shared view, while the API serves
        self.grid = GridControl(  # the site meter, setpoint control and signal intake
            config.meter,
            config.setpoint,
            self.state,
            clock=clock,
            remembered=config.webhook.remembered_signals if config.webhook else 10_000,
        )
        self.grid.register(self.metrics.registry)
        if config.mqtt is not None:  # base points on <prefix>/grid/basepoint
            self.grid.subscribe_basepoints(config.mqtt, config.site.name)
        if config.openadr is not None:  # an OpenADR 2.0b VEN of the configured VTN
            self.grid.attach_openadr(config.openadr)
        self.open_files_limit: int | None = None  # RLIMIT_NOFILE once run() has raised it

    def readiness(self) -> dict[str, bool]:
        """Ready = config loaded, store open, a power price and a device read, one reconcile done."""
        return {
            "config": True,
            "store": self.control is not None,
            "inputs": self.state.market.power_price_usd_per_mwh is not None
            and any(s.reachable for s in self.state.status.values()),
            "reconciled": self.ready.is_set(),
        }

    def current_plan(self) -> Plan | None:
        """The last guarded plan (None before the first tick)."""
        return self.loop.plan if self.loop else None

    def _drivers(self) -> Mapping[str, AsicDriver]:
        """One cgminer driver per distinct option set, keyed by device id."""
        pools = pools_of(self.config)
        by_options: dict[str, AsicDriver] = {}
        per_device: dict[str, AsicDriver] = {}
        for entry in (*self.config.devices, *self.config.device_ranges):
            key = settings_key(entry.options)  # secrets in: a masked dump would merge blocks
            if key not in by_options:
                by_options[key] = create_asic_driver(
                    pools,
                    entry.options,
                    concurrency=max(self.config.control.poll_concurrency, 1),
                    clock=self.clock,
                )
            for device in entry.devices():
                per_device[device.id] = by_options[key]
        return per_device

    def _polled(self, drivers: Mapping[str, _Driver]) -> dict[str, _Driver]:
        """Drivers the loop polls: all but the devices whose samples come over MQTT."""
        pushed = set(self.config.mqtt.push_devices) if self.config.mqtt else set()
        return {d: driver for d, driver in drivers.items() if d not in pushed}

    async def run(self, stop: asyncio.Event, *, serve_api: bool = True) -> None:
        """Run until stop is set; the API listens while the loop runs."""
        config = self.config
        self.open_files_limit = raise_open_files_limit(
            config.control.poll_concurrency
            + config.control.command_concurrency
            + 1024
            + config.api.max_connections
        )
        create_policy(config.policy)  # an unknown policy name fails here, before anything runs
        queues = build_queues(config, self.clock)
        drivers: dict[str, AsicDriver | QueueNodeDriver] = {**self._drivers(), **queues.per_node}
        with ControlStore.open(config.store.path) as store:
            self.state.desired.update(
                {d: w for d, w in store.desired().items() if d in self.state.devices}
            )
            if self.ingest is not None:  # the last pushed price, while its interval lasts
                kept = store.pushed_price(POWER_PRICE)
                if kept is not None:
                    self.sink.restore(kept, self.clock())
                self.sink.persist = store.put_pushed_price
            control = ControlService(
                store,
                self.state.devices,
                default_policy=config.policy.name,
                policies=list(available_policies()),
                clock=self.clock,  # curtail and overrides last their time across wall steps
            )
            self.control = control
            guard = ControlledGuard(config.guard, power_cap_w=config.site.power_cap_kw * 1000)
            guard.control = control
            guard.setpoint = self.grid.setpoint
            self.grid.audit, self.grid.note = grid_audit(store)  # signals not made over the API
            try:  # queue clients close only after the reconciler's command tasks have ended
                async with ControlledReconciler(
                    drivers,
                    store,
                    self.metrics,
                    concurrency=config.control.command_concurrency,
                    state=self.state,
                    clock=self.clock,
                    control=control,
                ) as reconciler:
                    self.loop = ControlLoop(
                        state=self.state,
                        telemetry=self._polled(drivers),
                        feeds=self.feeds,
                        policy=ControlledPolicy(control, available_policies(), config.policy),
                        guard=guard,
                        reconciler=reconciler,
                        store=store,
                        metrics=self.metrics,
                        poll_concurrency=config.control.poll_concurrency,
                        clock=self.clock,
                        queues=queues.sources,
                        push_sample_max_age_seconds=(
                            config.mqtt.max_sample_age_seconds if config.mqtt else 60.0
                        ),
                        pool_recovery_seconds=config.control.pool_recovery_seconds,
                        poll_deadline_seconds=config.control.poll_deadline_seconds,
                    )
                    self.sink.wake = self.loop.wake
                    self.grid.wake = self.loop.wake
                    async with contextlib.AsyncExitStack() as inputs:
                        inputs.push_async_callback(self.http.aclose)
                        if self.ingest is not None:
                            await inputs.enter_async_context(self.ingest)
                        if self.gpu_telemetry is not None:
                            await inputs.enter_async_context(self.gpu_telemetry)
                        await inputs.enter_async_context(self.grid)
                        await self._serve(stop, serve_api)
            finally:
                await queues.aclose()

    async def _serve(self, stop: asyncio.Event, serve_api: bool) -> None:
        """Run the loop, with the API listening when asked."""
        if serve_api:
            api = self.config.api
            security = security_from_config(self.config)
            locations, problems = load_locations(
                self.config.locations(), self.config.site.locations_csv, self.state.devices
            )
            for problem in problems[:20]:
                log.warning("site map: %s", problem)
            hub = ConsoleHub(self, locations=locations, location_problems=problems)
            self.console = hub
            hub_stop = asyncio.Event()
            async with serve(
                create_app(
                    self,
                    security,
                    [
                        console_routes(hub, security),
                        grid_routes(self.grid, self, self.config.webhook),
                    ],
                ),
                api.host,
                api.port,
                tls_cert_file=str(api.tls_cert_file) if api.tls_cert_file else None,
                tls_key_file=str(api.tls_key_file) if api.tls_key_file else None,
                limits=self.connection_limits(),
            ):
                hub_task = asyncio.create_task(hub.run(hub_stop), name="console.hub")
                try:
                    await self._run_loop(stop)
                finally:  # end the consoles' streams before the server stops
                    hub_stop.set()
                    await hub_task
        else:
            await self._run_loop(stop)

    def connection_limits(self) -> ConnectionLimits:
        """The API's connection bounds, its cap lowered so the device sockets keep their fds."""
        api, control = self.config.api, self.config.control
        limit = self.open_files_limit
        if limit is None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if limit == resource.RLIM_INFINITY:
                limit = 1 << 20
        device_sockets = min(
            len(self.state.devices), control.poll_concurrency + control.command_concurrency
        )
        cap = connection_cap(
            api.max_connections, open_files_limit=int(limit), device_sockets=device_sockets
        )
        if cap < api.max_connections:
            log.warning(
                "API connections capped at %d (api.max_connections = %d): the open-files limit "
                "(%d) is kept for %d device sockets and the daemon",
                cap,
                api.max_connections,
                limit,
                device_sockets,
            )
        return ConnectionLimits(
            max_connections=cap,
            max_per_client=api.max_connections_per_client,
            header_timeout_seconds=api.header_timeout_seconds,
            body_timeout_seconds=api.body_timeout_seconds,
            keep_alive_seconds=api.keep_alive_seconds,
        )

    async def _run_loop(self, stop: asyncio.Event) -> None:
        assert self.loop is not None
        log.info(
            "wattmux running: %d devices, policy %s, API on http://%s",
            len(self.state.devices),
            self.config.policy.name,
            self.config.api.listen,
        )
        heartbeat = SystemdHeartbeat(self.notifier)
        watchdog_s = watchdog_seconds()
        if watchdog_s is not None and watchdog_s < 2 * self.config.control.tick_seconds:
            log.warning(
                "systemd WatchdogSec (%.0f s) is shorter than two ticks (%.1f s): expect restarts",
                watchdog_s,
                2 * self.config.control.tick_seconds,
            )
        watchdog = self._watchdog(heartbeat)
        if watchdog is not None:
            self.loop.tick_listeners.append(watchdog.beat)
        self.loop.tick_listeners.append(heartbeat.tick_done)
        freezer = StartupFreezer()  # the collector stops walking start-up objects
        self.loop.tick_listeners.append(freezer.after_tick)
        self.loop.tick_listeners.append(heap_trimmer())  # freed poll memory back to the OS
        if self.control is not None:  # refused-request audit rows: [store] refused_audit_days
            self.loop.tick_listeners.append(
                RefusedAuditRetention(self.control.store, self.config.store.refused_audit_days)
            )
        if watchdog is not None:
            watchdog.start()
        try:
            await self.loop.run(self.config.control.tick_seconds, stop, self.ready)
        finally:
            if watchdog is not None:
                watchdog.stop()
            heartbeat.stopping()
            freezer.release()

    def _watchdog(self, heartbeat: SystemdHeartbeat) -> LoopWatchdog | None:
        """The stuck-loop watchdog of [control] watchdog_ticks (None when 0)."""
        control = self.config.control
        if control.watchdog_ticks <= 0:
            return None
        stuck_after = max(
            control.watchdog_ticks * control.tick_seconds, control.watchdog_min_seconds
        )
        systemd_s = watchdog_seconds()
        if systemd_s is not None and stuck_after >= systemd_s:
            log.warning(
                "stuck-loop watchdog (%.0f s) is not shorter than systemd WatchdogSec (%.0f s):"
                " systemd may kill a stuck loop before the failsafe runs",
                stuck_after,
                systemd_s,
            )
        config = self.config
        return LoopWatchdog(
            stuck_after,
            lambda: curtail_all(config),
            heartbeat=heartbeat,
            exit_process=self.exit_process,
        )


def default_store_path(directory: Path) -> Path:
    """Where a throwaway store goes (demo)."""
    return directory / "wattmux.sqlite"
