"""``breakeven``: mine while a device's mining margin is positive, sleep otherwise, with a price band."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from scheduler.core.economics import MarketEconomics, market_economics, option_economics
from scheduler.core.model import (
    Assignment,
    Device,
    DeviceKind,
    Plan,
    Snapshot,
    Workload,
    WorkloadKind,
)
from scheduler.core.reasons import Reason
from scheduler.policies import PolicyPlugin
from scheduler.policies.gpu_queue import plan_gpu_nodes


class BreakevenOptions(BaseModel):
    """Settings of ``breakeven`` (and ``demand-response``, which builds on it)."""

    model_config = ConfigDict(extra="forbid")

    hysteresis_usd_per_mwh: float = Field(
        5.0, ge=0, description="band around break-even: sleep above +band, wake below -band"
    )


class BreakevenPolicy:
    """Per device: mine below its break-even power price minus a band, sleep above it plus the band.

    Inside the band the device keeps what it is doing, so a price hovering at
    break-even does not flap the fleet.  It mines on its current pool while that
    is up, else on the first of its pools that is up (``pool_down``); with all
    of them down it sleeps (``pools_down``).  With no complete market the policy
    returns an empty plan; the Guard then applies the stale-input safe action.
    """

    name = "breakeven"

    def __init__(self, hysteresis_usd_per_mwh: float = 5.0) -> None:
        if hysteresis_usd_per_mwh < 0:
            raise ValueError("hysteresis_usd_per_mwh must be >= 0")
        self.hysteresis_usd_per_mwh = hysteresis_usd_per_mwh

    @classmethod
    def from_config(cls, config: BreakevenOptions) -> BreakevenPolicy:
        """Build from its settings (the [policy] section's)."""
        return cls(hysteresis_usd_per_mwh=config.hysteresis_usd_per_mwh)

    def plan(self, snapshot: Snapshot) -> Plan:
        """One assignment per device (reachable or not); empty when market inputs are missing."""
        economics = market_economics(snapshot)
        if economics is None:
            return Plan(created_at=snapshot.now, assignments=())
        assignments = tuple(
            self._decide(device, snapshot.current.get(device.id), economics, snapshot.pools_up)
            for device in snapshot.devices.values()
            if device.pools and device.kind is DeviceKind.ASIC
        )
        # GPU nodes weigh AI queues against mining (scheduler/policies/gpu_queue.py).
        assignments += tuple(plan_gpu_nodes(snapshot, economics))
        return Plan(created_at=snapshot.now, assignments=assignments)

    def _decide(
        self,
        device: Device,
        current: Workload | None,
        economics: MarketEconomics,
        pools_up: Mapping[str, bool],
    ) -> Assignment:
        price = economics.power_price_usd_per_mwh
        breakeven = economics.breakeven_usd_per_mwh(device)
        mining_now = current is not None and current.kind is WorkloadKind.MINE
        if mining_now:
            mine = price <= breakeven + self.hysteresis_usd_per_mwh
            in_band = mine and price > breakeven
        else:
            mine = price < breakeven - self.hysteresis_usd_per_mwh
            in_band = not mine and current is not None and price <= breakeven
        up = [p for p in device.pools if pools_up.get(p, True)]
        if mine and not up:
            return Assignment(device.id, Workload.sleep(), Reason.POOLS_DOWN, 0.0)
        if mine:
            pool = current.pool if mining_now and current and current.pool in up else None
            workload = Workload.mine(pool or up[0])
            if current is not None and current == workload:
                workload = current  # the driver's shared object: no copy per device
            reason = Reason.WITHIN_HYSTERESIS if in_band else Reason.PRICE_BELOW_BREAKEVEN
            if (
                mining_now
                and current is not None
                and current.pool not in up
                and current.pool in device.pools
            ):
                reason = Reason.POOL_DOWN
        else:
            workload = Workload.sleep()
            reason = Reason.WITHIN_HYSTERESIS if in_band else Reason.PRICE_ABOVE_BREAKEVEN
        option = option_economics(device, workload, economics)
        return Assignment(device.id, workload, reason, option.margin_usd_per_hour)


PLUGINS = (
    PolicyPlugin(
        tag=BreakevenPolicy.name, options=BreakevenOptions, factory=BreakevenPolicy.from_config
    ),
)
