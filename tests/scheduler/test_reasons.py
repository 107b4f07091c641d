"""The reason vocabulary: members are their strings, and what wattmux emits are members."""

from __future__ import annotations

import json

from scheduler.config.schema import GuardConfig
from scheduler.control.guard import Guard
from scheduler.core.model import Workload
from scheduler.core.reasons import (
    ALWAYS_SENT_REASONS,
    FAILOVER_REASONS,
    SAFETY_REASONS,
    UNHELD_REASONS,
    Reason,
)
from scheduler.policies.breakeven import BreakevenPolicy
from scheduler.policies.max_margin import MaxMarginPolicy
from tests.scheduler.helpers import device, snapshot

DEVICES = [device("a", "S21"), device("b", "S19j Pro")]


def test_a_reason_is_its_string_in_json_and_sets() -> None:
    assert Reason.FOUR_CP_WINDOW == "4cp_window" and str(Reason.FOUR_CP_WINDOW) == "4cp_window"
    assert json.dumps({"reason": Reason.DR_EVENT}) == '{"reason": "dr_event"}'
    assert "thermal" in SAFETY_REASONS and "pool_down" in UNHELD_REASONS
    assert "curtail" in ALWAYS_SENT_REASONS and "curtail" not in UNHELD_REASONS
    assert FAILOVER_REASONS <= UNHELD_REASONS and SAFETY_REASONS <= ALWAYS_SENT_REASONS


def test_policies_and_the_guard_emit_members() -> None:
    guard = Guard(GuardConfig.model_validate({"min_dwell_seconds": 0.0}), power_cap_w=1e9)
    stale = snapshot(DEVICES, None)
    assert {a.reason for a in guard.apply(BreakevenPolicy().plan(stale), stale).assignments} == {
        Reason.STALE_PRICE
    }
    cheap = snapshot(DEVICES, 20.0)
    hot = snapshot(DEVICES, 20.0, temperatures={"b": 99.0})
    for snap in (cheap, hot):
        for policy in (BreakevenPolicy(), MaxMarginPolicy()):
            for assignment in guard.apply(policy.plan(snap), snap).assignments:
                assert type(assignment.reason) is Reason, assignment
    assert guard.apply(BreakevenPolicy().plan(hot), hot).by_device()["b"].workload == (
        Workload.sleep()
    )
