"""Why a device got its workload: the reasons policies, the Guard and operator control emit.

``Reason`` is a ``StrEnum``: each member is its string, so the store, the
API, metrics labels and JSON keep the very same text.  ``Assignment.reason``
is typed ``Reason | str``: the built-in policies, the Guard and the control
service emit ``Reason`` members; a third-party policy (entry point group
``wattmux.policies``) may still give its own string, which is stored and
counted as is and is held back like any economic reason.

The sets below say how the Guard and the control service treat a reason; a
plain string equal to a member's value is treated the same.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Every reason wattmux itself gives for an assignment."""

    # Economics (breakeven, max-margin, demand-response on breakeven).
    PRICE_BELOW_BREAKEVEN = "price_below_breakeven"
    PRICE_ABOVE_BREAKEVEN = "price_above_breakeven"
    WITHIN_HYSTERESIS = "within_hysteresis"
    # Pools (breakeven, max-margin): the current pool is down, every pool is down, a cheaper pool.
    POOL_DOWN = "pool_down"
    POOLS_DOWN = "pools_down"
    LOWER_POOL_FEE = "lower_pool_fee"
    # Site limits (max-margin, demand-response, the Guard).
    POWER_CAP = "power_cap"
    DR_EVENT = "dr_event"
    # Schedule windows (schedule).
    SCHEDULE_WINDOW = "schedule_window"
    FOUR_CP_WINDOW = "4cp_window"
    # GPU nodes (the GPU queue planner of the policies; leases).
    AI_LEASE = "ai_lease"  # an active lease keeps the node on AI
    AI_DEMAND = "ai_demand"  # the queue has work for the node and it pays more than mining
    AI_JOB_RUNNING = "ai_job_running"  # jobs run on the node and pay more than mining
    QUEUE_EMPTY = "queue_empty"  # no AI work for the node; mining pays
    MINING_ABOVE_AI_RATE = "mining_above_ai_rate"  # AI work waits but mining pays more
    MINING_BELOW_COST = "mining_below_cost"  # no AI work and mining does not pay: stay available
    PREEMPTION_COST = "preemption_cost"  # mining pays more per hour, not enough to lose progress
    # The Guard.
    STALE_PRICE = "stale_price"
    STALE_INPUT = "stale_input"
    THERMAL = "thermal"
    MIN_DWELL = "min_dwell"
    BELOW_MIN_GAIN = "below_min_gain"
    RAMP_LIMIT = "ramp_limit"
    # Operator control (the control service): a pinned workload, a curtail event, hold modes.
    OVERRIDE = "override"
    CURTAIL = "curtail"
    MANUAL = "manual"
    PAUSED = "paused"
    # Site power control (scheduler.control.setpoint): following a target against the meter.
    SETPOINT = "setpoint"  # a power target or sleep to bring the metered site to its target
    SETPOINT_RESTORE = "setpoint_restore"  # back to the policy's workload as the target allows
    AWARD_RESERVE = "award_reserve"  # kept running: an ancillary award needs curtailable load
    # The dead-man path (``wattmux failsafe``), outside the loop.
    FAILSAFE = "failsafe"


# Safety: never held back by dwell, gain or ramp, and not counted in the ramp budget.
SAFETY_REASONS: frozenset[Reason] = frozenset(
    {Reason.STALE_PRICE, Reason.STALE_INPUT, Reason.THERMAL, Reason.POWER_CAP, Reason.DR_EVENT}
) | {Reason.SETPOINT}
# Not safety, but never held back by dwell, gain or ramp either: leaving a pool that is down
# (mining there earns nothing, whatever the margin says).
FAILOVER_REASONS: frozenset[Reason] = frozenset({Reason.POOL_DOWN, Reason.POOLS_DOWN})
# A contract, not a market bet: an AI lease that starts is not held back either.
CONTRACT_REASONS: frozenset[Reason] = frozenset({Reason.AI_LEASE})
# Exempt from the Guard's dwell, gain and ramp rules.
UNHELD_REASONS: frozenset[Reason] = (
    SAFETY_REASONS
    | FAILOVER_REASONS
    | CONTRACT_REASONS
    | {Reason.SETPOINT_RESTORE, Reason.AWARD_RESERVE}
)
# Sent to devices whatever the mode (paused, dry-run): safety and site curtailment.
ALWAYS_SENT_REASONS: frozenset[Reason] = SAFETY_REASONS | {Reason.CURTAIL}
