"""Mining economics: hashprice, break-even power price and the margin of each workload option.

Pure functions, no I/O and no clock.  Units: difficulty is the network
difficulty (expected hashes per block = difficulty * 2**32), BTC prices in USD,
hashprice in USD per TH/s per day, power prices in USD/MWh, power in W, money
per hour in USD/h.

Power-level model (linear, on purpose, until measured curves exist): a miner
at ``power_level`` p hashes ``nominal_hashrate * p`` and draws
``nominal_power_w * p``.  Its efficiency, and so its break-even power price, is
therefore the same at every level.  Real firmware is a little more efficient
when underclocked; this model errs on the side of mining less.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.core.model import (
    TERA,
    Device,
    DeviceKind,
    QueueDemand,
    RunningJob,
    Snapshot,
    Workload,
    WorkloadKind,
)

SECONDS_PER_HOUR = 3600.0

SECONDS_PER_DAY = 86_400
HOURS_PER_DAY = 24
HASHES_PER_DIFFICULTY = 2**32
# One TH/s for a day at 1 J/TH draws 1 W for 24 h = 0.024 kWh.
KWH_PER_TH_DAY_PER_J_PER_TH = 0.024


def btc_per_th_day(difficulty: float, block_reward_btc: float) -> float:
    """Return the BTC that 1 TH/s earns per day: 86400 * 1e12 * reward / (difficulty * 2**32)."""
    if not difficulty > 0:
        raise ValueError(f"difficulty must be > 0, got {difficulty}")
    return SECONDS_PER_DAY * TERA * block_reward_btc / (difficulty * HASHES_PER_DIFFICULTY)


def hashprice_usd_per_th_day(
    difficulty: float,
    btc_price_usd: float,
    block_subsidy_btc: float,
    fees_btc_per_block: float = 0.0,
    pool_fee: float = 0.0,
) -> float:
    """Return the USD that 1 TH/s earns per day from subsidy and fees, net of the pool fee."""
    if not 0.0 <= pool_fee < 1.0:
        raise ValueError(f"pool_fee must be in [0, 1), got {pool_fee}")
    reward_btc = block_subsidy_btc + fees_btc_per_block
    return btc_per_th_day(difficulty, reward_btc) * btc_price_usd * (1.0 - pool_fee)


def breakeven_usd_per_mwh(hashprice_usd_per_th_day: float, efficiency_j_per_th: float) -> float:
    """Return the USD/MWh at which mining just pays its power: hashprice / (J/TH * 0.024) * 1e3."""
    if not efficiency_j_per_th > 0:
        raise ValueError(f"efficiency_j_per_th must be > 0, got {efficiency_j_per_th}")
    usd_per_kwh = hashprice_usd_per_th_day / (efficiency_j_per_th * KWH_PER_TH_DAY_PER_J_PER_TH)
    return usd_per_kwh * 1000.0


def cost_usd_per_hour(power_w: float, power_price_usd_per_mwh: float) -> float:
    """Electricity cost of drawing power_w for an hour; negative when the price is negative."""
    return power_w / 1000.0 * power_price_usd_per_mwh / 1000.0


@dataclass(frozen=True, slots=True)
class OptionEconomics:
    """What one workload option of one device earns and costs at one power price."""

    device_id: str
    workload: Workload
    revenue_usd_per_hour: float
    power_w: float
    cost_usd_per_hour: float
    margin_usd_per_hour: float


@dataclass(frozen=True, slots=True)
class MarketEconomics:
    """The two numbers every option is priced with: hashprice (net of pool fee) and power price."""

    hashprice_usd_per_th_day: float
    power_price_usd_per_mwh: float
    queues: Mapping[str, QueueDemand] = field(default_factory=dict)

    def breakeven_usd_per_mwh(self, device: Device) -> float:
        """Return the device's break-even power price (the same at any level, linear model)."""
        return breakeven_usd_per_mwh(self.hashprice_usd_per_th_day, device.efficiency_j_per_th)


def market_economics(snapshot: Snapshot) -> MarketEconomics | None:
    """Hashprice and power price from the snapshot's market; None when an input is missing.

    Needed: BTC price, difficulty, block subsidy and power price.  Fees count
    as 0 when missing.  A value that cannot be priced with (not finite,
    difficulty <= 0, a negative BTC price, subsidy or fee) counts as missing.
    The snapshot's pool fee is taken off the hashprice.
    """
    market = snapshot.market
    readings = (
        market.btc_price_usd,
        market.difficulty,
        market.block_subsidy_btc,
        market.power_price_usd_per_mwh,
    )
    if any(reading is None for reading in readings):
        return None
    btc_price_usd, difficulty, subsidy_btc, power_price = (
        float(reading.value) for reading in readings if reading is not None
    )
    fees_btc = 0.0 if market.fees_btc_per_block is None else float(market.fees_btc_per_block.value)
    values = (btc_price_usd, difficulty, subsidy_btc, fees_btc, power_price)
    if not all(math.isfinite(v) for v in values):
        return None
    if difficulty <= 0 or min(btc_price_usd, subsidy_btc, fees_btc) < 0:
        return None
    hashprice = hashprice_usd_per_th_day(
        difficulty, btc_price_usd, subsidy_btc, fees_btc, pool_fee=snapshot.pool_fee
    )
    return MarketEconomics(
        hashprice_usd_per_th_day=hashprice,
        power_price_usd_per_mwh=power_price,
        queues=dict(snapshot.queues),
    )


def option_economics(
    device: Device,
    workload: Workload,
    economics: MarketEconomics,
    *,
    jobs: tuple[RunningJob, ...] = (),
    new_ai_gpus: int | None = None,
) -> OptionEconomics:
    """Revenue, power, cost and margin per hour of running workload on device.

    mine at level p: nominal hash rate and power both times p (linear model);
    sleep: the device's sleep power, no revenue; off: nothing either way.
    AI work is not an option for an ASIC (ValueError); for a GPU node see
    ``ai_option_economics`` (``jobs`` running on it, ``new_ai_gpus`` of pending
    work it would take; default: as many as the queue has pending, up to its GPUs).
    """
    if workload.kind is WorkloadKind.AI and device.kind is DeviceKind.GPU_NODE:
        return ai_option_economics(device, str(workload.queue), economics, jobs, new_ai_gpus)
    if workload.kind is WorkloadKind.MINE:
        hashrate_ths = device.nominal_hashrate_hs / TERA * workload.power_level
        power_w = device.nominal_power_w * workload.power_level
        revenue = hashrate_ths * economics.hashprice_usd_per_th_day / HOURS_PER_DAY
    elif workload.kind is WorkloadKind.SLEEP:
        power_w, revenue = device.sleep_power_w, 0.0
    elif workload.kind is WorkloadKind.OFF:
        power_w, revenue = 0.0, 0.0
    elif device.kind is DeviceKind.ASIC:
        raise ValueError(f"{device.id}: an ASIC cannot serve AI work ({workload})")
    else:
        raise ValueError(f"{device.id}: no revenue model for AI work yet ({workload})")
    cost = cost_usd_per_hour(power_w, economics.power_price_usd_per_mwh)
    return OptionEconomics(
        device_id=device.id,
        workload=workload,
        revenue_usd_per_hour=revenue,
        power_w=power_w,
        cost_usd_per_hour=cost,
        margin_usd_per_hour=revenue - cost,
    )


def price_options(
    devices: Iterable[Device], economics: MarketEconomics
) -> dict[str, list[OptionEconomics]]:
    """Every option (``device.options()``) of every device, keyed by device id, in option order."""
    return {
        device.id: [option_economics(device, option, economics) for option in device.options()]
        for device in devices
    }


def gpu_node_power_w(device: Device, busy_gpus: int) -> float:
    """Power of a GPU node with busy_gpus of its GPUs at work: idle (sleep) power plus a linear share."""
    share = min(1.0, max(0, busy_gpus) / device.gpus) if device.gpus else 0.0
    return device.sleep_power_w + (device.nominal_power_w - device.sleep_power_w) * share


def queue_rate_usd_per_gpu_hour(economics: MarketEconomics, queue: str) -> float | None:
    """What a GPU-hour of the queue's work pays; None when the queue is unknown or unpriced."""
    demand = economics.queues.get(queue)
    if demand is None or demand.rate_usd_per_gpu_hour is None:
        return None
    return demand.rate_usd_per_gpu_hour


def ai_option_economics(
    device: Device,
    queue: str,
    economics: MarketEconomics,
    jobs: tuple[RunningJob, ...] = (),
    new_ai_gpus: int | None = None,
) -> OptionEconomics:
    """A GPU node serving ``queue``: it earns only for GPUs that have work.

    Revenue = the jobs already running on it (each at its own queue's rate)
    plus ``new_ai_gpus`` of the queue's pending work at the queue's rate; a
    queue with no work, or no rate, pays nothing while the node still draws
    its idle power.
    """
    if device.kind is not DeviceKind.GPU_NODE:
        raise ValueError(f"{device.id}: only a GPU node can serve AI work (ai({queue}))")
    busy = sum(job.gpus for job in jobs)
    rate = queue_rate_usd_per_gpu_hour(economics, queue)
    if new_ai_gpus is None:
        demand = economics.queues.get(queue)
        new_ai_gpus = demand.pending_gpus if demand is not None else 0
    new_ai_gpus = max(0, min(new_ai_gpus, device.gpus - busy)) if rate is not None else 0
    revenue = (
        sum((queue_rate_usd_per_gpu_hour(economics, job.queue) or 0.0) * job.gpus for job in jobs)
        + (rate or 0.0) * new_ai_gpus
    )
    power_w = gpu_node_power_w(device, busy + new_ai_gpus)
    cost = cost_usd_per_hour(power_w, economics.power_price_usd_per_mwh)
    return OptionEconomics(
        device_id=device.id,
        workload=Workload.ai(queue),
        revenue_usd_per_hour=revenue,
        power_w=power_w,
        cost_usd_per_hour=cost,
        margin_usd_per_hour=revenue - cost,
    )


@dataclass(frozen=True, slots=True)
class SwitchCost:
    """What moving a GPU node off AI work costs: progress lost by preemption, and time to drain."""

    lost_progress_usd: float
    drain_seconds: float


def switch_cost(
    jobs: tuple[RunningJob, ...], economics: MarketEconomics, horizon_seconds: float
) -> SwitchCost:
    """Cost of taking a node away from its running AI jobs.

    A job whose queue allows preemption is requeued: the GPU-hours it has run
    since its start are lost (priced at its queue's rate; no checkpoint is
    assumed).  A job that may not be preempted runs to its end: nothing is
    lost, but the node is not free until then (its remaining time limit, or
    the whole horizon when it has none).
    """
    lost_usd = 0.0
    drain_s = 0.0
    for job in jobs:
        demand = economics.queues.get(job.queue)
        if demand is not None and demand.preemption_allowed:
            rate = demand.rate_usd_per_gpu_hour or 0.0
            lost_usd += job.gpus * job.elapsed_seconds / SECONDS_PER_HOUR * rate
        else:
            remaining = horizon_seconds if job.remaining_seconds is None else job.remaining_seconds
            drain_s = max(drain_s, min(horizon_seconds, remaining))
    return SwitchCost(lost_progress_usd=lost_usd, drain_seconds=drain_s)
