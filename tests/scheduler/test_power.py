"""One planned power for a device on a workload, shared by the Guard, control, policies and backtest."""

from __future__ import annotations

from scheduler.core.model import Workload
from scheduler.core.power import planned_power_w
from tests.fakes import gpu_node

NODE = gpu_node()


def test_each_workload_draws_its_planned_power() -> None:
    assert planned_power_w(NODE, Workload.mine("main")) == 6000.0
    assert planned_power_w(NODE, Workload.mine("main", 0.8)) == 6000.0 * 0.8
    assert planned_power_w(NODE, Workload.ai("train")) == 6000.0  # the worst case
    assert planned_power_w(NODE, Workload.sleep()) == 800.0
    assert planned_power_w(NODE, Workload.off()) == 0.0
    assert planned_power_w(NODE, None) == 6000.0  # unknown: the worst case
