"""The model objects a configuration describes: devices (ranges expanded) and pools."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from scheduler.core.hardware import MODELS
from scheduler.core.model import TERA, Device, DeviceKind, Pool

if TYPE_CHECKING:
    from scheduler.config.schema import (
        DeviceConfig,
        DeviceRangeConfig,
        GpuNodeConfig,
        WattmuxConfig,
        _DeviceCommon,
    )


def asic(entry: _DeviceCommon, device_id: str, address: str) -> Device:
    """One ASIC of a [[devices]] or [[device_ranges]] entry; the model's facts fill the gaps."""
    facts = MODELS[entry.model]
    return Device(
        id=device_id,
        kind=DeviceKind.ASIC,
        model=entry.model,
        driver=entry.options.driver,
        address=address,
        port=entry.options.port,
        nominal_hashrate_hs=(entry.nominal_hashrate_ths or facts.hashrate_ths) * TERA,
        nominal_power_w=entry.nominal_power_w or facts.power_w,
        sleep_power_w=(
            entry.sleep_power_w if entry.sleep_power_w is not None else facts.sleep_power_w
        ),
        max_temperature_c=entry.max_temperature_c or facts.max_temperature_c,
        pools=tuple(entry.pools),
    )


def device_entry(entry: DeviceConfig) -> list[Device]:
    """The one Device a [[devices]] entry describes."""
    return [asic(entry, entry.id, str(entry.address))]


def device_range(entry: DeviceRangeConfig) -> list[Device]:
    """One Device per address of a [[device_ranges]] entry (ids prefix-001, prefix-002, ...)."""
    width = max(3, len(str(entry.count)))
    first = asic(entry, f"{entry.id_prefix}-{1:0{width}d}", str(entry.first_address))
    # replace() shares the model, driver, pools tuple and nominal floats of the first
    # Device: one copy per range, not per device (memory at 10,000 devices).
    return [first] + [
        dataclasses.replace(
            first, id=f"{entry.id_prefix}-{i + 1:0{width}d}", address=str(entry.first_address + i)
        )
        for i in range(1, entry.count)
    ]


def gpu_node(node: GpuNodeConfig) -> list[Device]:
    """The one Device a [[gpu_nodes]] entry describes (address = its name in the queue system)."""
    return [
        Device(
            id=node.id,
            kind=DeviceKind.GPU_NODE,
            model=f"{node.gpus}xGPU",
            driver="queue",
            address=node.node or node.id,
            port=0,
            nominal_hashrate_hs=node.mining_hashrate_ths * TERA,
            nominal_power_w=node.nominal_power_w,
            sleep_power_w=node.idle_power_w,
            pools=tuple(node.pools),
            gpus=node.gpus,
            queues=tuple(node.queues),
        )
    ]


def all_devices(config: WattmuxConfig) -> list[Device]:
    """Every device of the site, ranges expanded."""
    out: list[Device] = []
    for entry in (*config.devices, *config.device_ranges):
        out.extend(entry.devices())
    for node in config.gpu_nodes:
        out.extend(node.devices())
    return out


def pools_of(config: WattmuxConfig) -> dict[str, Pool]:
    """The configured pools as model objects keyed by name."""
    return {
        p.name: Pool(name=p.name, url=p.url, user=p.user, password=p.password) for p in config.pools
    }
