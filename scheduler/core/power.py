"""The power a device is planned to draw on a workload: one answer for every caller.

The Guard (ramp limit, site cap), the control service (curtail), the
policies (demand-response shedding) and the backtest (settling a plan) all
count a device's power with ``planned_power_w``:

- ``mine(pool, p)``: nominal power times the power level p (linear model, as
  in ``scheduler.core.economics``);
- ``ai(queue)``: nominal power, the worst case (a GPU node's draw depends on
  how many of its GPUs get work, which a plan does not know);
- ``sleep``: the device's sleep power;
- ``off``: 0 W;
- unknown (``None``): nominal power, the worst case.

Economics prices a GPU node's AI option by its occupancy instead
(``economics.gpu_node_power_w``): that is what the option is expected to
cost, not what the site must be ready to supply.
"""

from __future__ import annotations

from scheduler.core.model import Device, Workload, WorkloadKind


def planned_power_w(device: Device, workload: Workload | None) -> float:
    """Power in W the device draws on the workload (unknown or AI: nominal, the worst case)."""
    if workload is None:
        return device.nominal_power_w
    if workload.kind is WorkloadKind.MINE:
        return device.nominal_power_w * workload.power_level
    if workload.kind is WorkloadKind.SLEEP:
        return device.sleep_power_w
    return 0.0 if workload.kind is WorkloadKind.OFF else device.nominal_power_w
