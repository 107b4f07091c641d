"""The Policy protocol and the registry of policies (built-ins plus entry point group ``wattmux.policies``).

A policy is pure: ``plan(snapshot) -> Plan``, synchronous, deterministic, no I/O
and no clock reads (the snapshot carries ``now``).  The same object runs in the
daemon and in the backtester.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from scheduler.config.schema import PolicyConfig
from scheduler.core.model import Plan, Snapshot

ENTRY_POINT_GROUP = "wattmux.policies"


@runtime_checkable
class Policy(Protocol):
    """Turns a snapshot into a plan."""

    name: str

    def plan(self, snapshot: Snapshot) -> Plan:
        """Return one assignment per device the policy decides on."""
        ...


PolicyFactory = Callable[[PolicyConfig], Policy]


class UnknownPolicyError(LookupError):
    """No policy of that name is built in or installed."""


def builtin_policies() -> dict[str, PolicyFactory]:
    """The policies shipped with wattmux, by name."""
    from scheduler.policies.breakeven import BreakevenPolicy
    from scheduler.policies.demand_response import DemandResponsePolicy
    from scheduler.policies.max_margin import MaxMarginPolicy
    from scheduler.policies.schedule import SchedulePolicy

    return {
        BreakevenPolicy.name: BreakevenPolicy.from_config,
        MaxMarginPolicy.name: MaxMarginPolicy.from_config,
        DemandResponsePolicy.name: DemandResponsePolicy.from_config,
        SchedulePolicy.name: SchedulePolicy.from_config,
    }


def available_policies() -> dict[str, PolicyFactory]:
    """Built-in policies plus those installed through the ``wattmux.policies`` entry points."""
    found = builtin_policies()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.load())
    return found


def create_policy(config: PolicyConfig) -> Policy:
    """Build the configured policy or raise UnknownPolicyError listing the known names."""
    factories = available_policies()
    try:
        factory = factories[config.name]
    except KeyError:
        known = ", ".join(sorted(factories))
        raise UnknownPolicyError(f"unknown policy {config.name!r}; known: {known}") from None
    return factory(config)
