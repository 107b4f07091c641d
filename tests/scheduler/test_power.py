"""One planned power for a device on a workload, shared by the Guard, control, policies and backtest."""

from __future__ import annotations

from scheduler.core.model import Device, DeviceKind, Workload
from scheduler.core.power import planned_power_w

NODE = Device(
    id="g1",
    kind=DeviceKind.GPU_NODE,
    model="8x GPU",
    driver="slurm",
    address="g1",
    port=0,
    nominal_hashrate_hs=150e12,
    nominal_power_w=6000.0,
    sleep_power_w=800.0,
    pools=("main",),
    gpus=8,
    queues=("train",),
)


def test_each_workload_draws_its_planned_power() -> None:
    assert planned_power_w(NODE, Workload.mine("main")) == 6000.0
    assert planned_power_w(NODE, Workload.mine("main", 0.8)) == 6000.0 * 0.8
    assert planned_power_w(NODE, Workload.ai("train")) == 6000.0  # the worst case
    assert planned_power_w(NODE, Workload.sleep()) == 800.0
    assert planned_power_w(NODE, Workload.off()) == 0.0
    assert planned_power_w(NODE, None) == 6000.0  # unknown: the worst case
