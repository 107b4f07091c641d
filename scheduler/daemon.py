"""The daemon: composes inputs, loop, reconciler, store, metrics and API in one TaskGroup."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from drivers.asic.cgminer import CgminerDriver
from drivers.base import MarketFeed
from drivers.market.static import StaticMarketFeed
from drivers.sim.prices import (
    BtcDailyFeed,
    ErcotReplayFeed,
    bundled_btc_path,
    bundled_ercot_path,
    intervals_from,
    load_btc_daily_csv,
    load_ercot_csv,
    parse_local_time,
)
from scheduler.api import create_app, serve
from scheduler.api_routes import security_from_config
from scheduler.config import ReplayPriceConfig, StaticMarketConfig, WattmuxConfig, pools_of
from scheduler.control import (
    ControlledGuard,
    ControlledPolicy,
    ControlledReconciler,
    ControlService,
)
from scheduler.loop import ControlLoop
from scheduler.metrics import Metrics
from scheduler.model import Plan
from scheduler.policies import available_policies, create_policy
from scheduler.state import FleetState
from scheduler.store import ControlStore

log = logging.getLogger(__name__)


def build_feeds(config: WattmuxConfig, clock: Callable[[], float]) -> list[MarketFeed]:
    """Market feeds named in [[market]]; the replay also brings the BTC days it covers."""
    feeds: list[MarketFeed] = []
    for entry in config.market:
        if isinstance(entry, StaticMarketConfig):
            values = {
                name: value
                for name, value in entry.model_dump(exclude={"driver"}).items()
                if value is not None
            }
            feeds.append(StaticMarketFeed(values, clock=clock))
        elif isinstance(entry, ReplayPriceConfig):
            intervals = load_ercot_csv(entry.path or bundled_ercot_path())
            if entry.start:
                intervals = intervals_from(intervals, parse_local_time(entry.start))
            replay = ErcotReplayFeed(intervals, speed=entry.speed, clock=clock)
            feeds.append(replay)
            feeds.append(BtcDailyFeed(replay, load_btc_daily_csv(bundled_btc_path()), clock=clock))
    return feeds


class Daemon:
    """One running wattmux: what the API reads (state, metrics, plan) and the composition."""

    def __init__(
        self,
        config: WattmuxConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        feeds: Sequence[MarketFeed] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.state = FleetState(config.all_devices(), pool_fee=config.economics.pool_fee)
        self.metrics = Metrics(self.state, clock=clock)
        self.feeds = list(feeds) if feeds is not None else build_feeds(config, clock)
        self.loop: ControlLoop | None = None
        self.ready = asyncio.Event()
        self.control: ControlService | None = None

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

    def _drivers(self) -> Mapping[str, CgminerDriver]:
        """One cgminer driver per distinct option set, keyed by device id."""
        pools = pools_of(self.config)
        by_options: dict[str, CgminerDriver] = {}
        per_device: dict[str, CgminerDriver] = {}
        for entry in (*self.config.devices, *self.config.device_ranges):
            key = entry.options.model_dump_json()
            if key not in by_options:
                by_options[key] = CgminerDriver(
                    pools,
                    entry.options,
                    concurrency=max(self.config.control.poll_concurrency, 1),
                    clock=self.clock,
                )
            for device in entry.devices():
                per_device[device.id] = by_options[key]
        return per_device

    async def run(self, stop: asyncio.Event, *, serve_api: bool = True) -> None:
        """Run until stop is set; the API listens while the loop runs."""
        config = self.config
        drivers = self._drivers()
        create_policy(config.policy)  # an unknown policy name fails here, before anything runs
        with ControlStore.open(config.store.path) as store:
            self.state.desired.update(
                {d: w for d, w in store.desired().items() if d in self.state.devices}
            )
            control = ControlService(
                store,
                self.state.devices,
                default_policy=config.policy.name,
                policies=list(available_policies()),
            )
            self.control = control
            guard = ControlledGuard(config.guard, power_cap_w=config.site.power_cap_kw * 1000)
            guard.control = control
            async with ControlledReconciler(
                drivers,
                store,
                self.metrics,
                concurrency=config.control.command_concurrency,
                control=control,
            ) as reconciler:
                self.loop = ControlLoop(
                    state=self.state,
                    telemetry=drivers,
                    feeds=self.feeds,
                    policy=ControlledPolicy(control, available_policies(), config.policy),
                    guard=guard,
                    reconciler=reconciler,
                    store=store,
                    metrics=self.metrics,
                    poll_concurrency=config.control.poll_concurrency,
                    clock=self.clock,
                )
                if serve_api:
                    tls = config.api
                    async with serve(
                        create_app(self, security_from_config(config)),
                        config.api.host,
                        config.api.port,
                        tls_cert_file=str(tls.tls_cert_file) if tls.tls_cert_file else None,
                        tls_key_file=str(tls.tls_key_file) if tls.tls_key_file else None,
                    ):
                        await self._run_loop(stop)
                else:
                    await self._run_loop(stop)

    async def _run_loop(self, stop: asyncio.Event) -> None:
        assert self.loop is not None
        log.info(
            "wattmux running: %d devices, policy %s, API on http://%s",
            len(self.state.devices),
            self.config.policy.name,
            self.config.api.listen,
        )
        await self.loop.run(self.config.control.tick_seconds, stop, self.ready)


def default_store_path(directory: Path) -> Path:
    """Where a throwaway store goes (demo)."""
    return directory / "wattmux.sqlite"
