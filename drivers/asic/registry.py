"""Which ASIC driver class serves which ``driver`` tag, and what each firmware can do.

Capability flags are per firmware personality (a table, not branches): the
reconciler and the API can ask before asking a device for something it cannot do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from drivers.asic.antminer import AntminerDriver
from drivers.asic.asicrs import AsicRsDriver
from drivers.asic.braiins import BraiinsDriver
from drivers.asic.cgminer import CgminerDriver
from drivers.asic.config import (
    AntminerOptions,
    AsicRsOptions,
    BraiinsOptions,
    CgminerOptions,
    LuxosOptions,
    WhatsminerOptions,
)
from drivers.asic.luxos import LuxosDriver
from drivers.asic.whatsminer import WhatsminerDriver
from drivers.asic.whatsminer_v3 import WhatsminerV3Driver
from scheduler.core.model import Pool

AsicOptions = (
    CgminerOptions
    | LuxosOptions
    | AntminerOptions
    | BraiinsOptions
    | WhatsminerOptions
    | AsicRsOptions
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a firmware personality can be asked to do and what it reports."""

    sleep: bool
    power_target: bool
    pool_switch: bool
    measured_power: bool


CAPABILITIES: Mapping[str, Capabilities] = {
    # LuxOS-compatible curtail; pools through addpool/switchpool; no power targets.
    "cgminer": Capabilities(sleep=True, power_target=False, pool_switch=True, measured_power=True),
    "luxos": Capabilities(sleep=True, power_target=True, pool_switch=True, measured_power=True),
    # Sleep through the web CGI; privileged cgminer commands are off by default; no power reading.
    "antminer": Capabilities(
        sleep=True, power_target=False, pool_switch=False, measured_power=False
    ),
    # Pause/resume and power targets over the public gRPC API; pools stay as set on the miner.
    "braiins": Capabilities(sleep=True, power_target=True, pool_switch=False, measured_power=True),
    # API v2: power_off/power_on, set_power_pct (0..100 %, floors per model in
    # drivers/asic/whatsminer.MODELS), update_pools.
    "whatsminer": Capabilities(
        sleep=True, power_target=True, pool_switch=True, measured_power=True
    ),
    # API v3: set.miner.service stop/start, set.miner.power_percent; pool changes refused.
    "whatsminer-v3": Capabilities(
        sleep=True, power_target=True, pool_switch=False, measured_power=True
    ),
    # Optional pyasic-rs library: pause/resume where it supports them; power levels refused.
    "asic-rs": Capabilities(sleep=True, power_target=False, pool_switch=False, measured_power=True),
}

AsicDriver = CgminerDriver | AsicRsDriver
"""What create_asic_driver returns: collect() and apply() (TelemetrySource, MinerControl)."""


def capabilities(options: AsicOptions) -> Capabilities:
    """The capability flags of one options block (Whatsminer's differ by API version)."""
    if isinstance(options, WhatsminerOptions) and options.api_version == 3:
        return CAPABILITIES["whatsminer-v3"]
    return CAPABILITIES[options.driver]


def create_asic_driver(
    pools: Mapping[str, Pool],
    options: AsicOptions,
    *,
    concurrency: int,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsicDriver:
    """The driver for one options block (one instance serves every device that shares it)."""
    if isinstance(options, WhatsminerOptions):
        if options.api_version == 3:
            return WhatsminerV3Driver(
                pools, options, concurrency=concurrency, clock=clock, sleep=sleep
            )
        return WhatsminerDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
    if isinstance(options, AsicRsOptions):
        return AsicRsDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
    if isinstance(options, BraiinsOptions):
        return BraiinsDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
    if isinstance(options, AntminerOptions):
        return AntminerDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
    if isinstance(options, LuxosOptions):
        return LuxosDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
    return CgminerDriver(pools, options, concurrency=concurrency, clock=clock, sleep=sleep)
