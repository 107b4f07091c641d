"""The Policy protocol and the policy registry (built-ins plus entry point group ``wattmux.policies``).

A policy is pure: ``plan(snapshot) -> Plan``, synchronous, deterministic, no I/O
and no clock reads (the snapshot carries ``now``).  The same object runs in the
daemon and in the backtester.

Each policy module declares its entry (``PLUGINS = (PolicyPlugin(...),)``): its
name, its options model and a factory taking those options.  Settings come from
the config's ``[policy]`` section:

- the flat ``[policy]`` keys (``hysteresis_usd_per_mwh``, ``power_levels``,
  ``schedule`` ...) are the settings of the shipped policies, each policy taking
  the keys its options model declares;
- ``[policy.options.<name>]`` is a table of settings for the policy ``<name>``
  only, validated by its options model (``policy.options.<name>.<key>`` in
  errors); for a shipped policy it overrides the flat keys.  A policy installed
  through an entry point keeps its settings there::

      [policy]
      name = "my-policy"

      [policy.options.my-policy]
      threshold_usd_per_mwh = 40

An installed package names, in the ``wattmux.policies`` group, a module that
defines ``PLUGINS``, a ``PolicyPlugin``, or (the older form) a factory called
with the whole ``[policy]`` section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from drivers.registry import Plugin, Registry
from scheduler.core.model import Plan, Snapshot

ENTRY_POINT_GROUP = "wattmux.policies"


@runtime_checkable
class Policy(Protocol):
    """Turns a snapshot into a plan."""

    name: str

    def plan(self, snapshot: Snapshot) -> Plan:
        """Return one assignment per device the policy decides on."""
        ...


class PolicyConfig(Protocol):
    """What a policy factory reads of the ``[policy]`` section (``scheduler.config.schema``)."""

    @property
    def name(self) -> str:
        """The configured policy."""
        ...

    def settings(self, name: str | None = None) -> BaseModel:
        """The validated settings of a policy (default: the configured one)."""
        ...


PolicyFactory = Callable[[PolicyConfig], Policy]
"""Builds a policy from the whole ``[policy]`` section (the daemon's policy switch)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPlugin(Plugin[Callable[[Any], Policy]]):
    """One policy: its name (``tag``), options model and a factory taking those options.

    With ``options = None`` the factory gets the whole ``[policy]`` section.
    """


class _PolicyRegistry(Registry[PolicyPlugin]):
    def register_loaded(self, point: EntryPoint, loaded: object) -> list[PolicyPlugin]:
        """A bare factory (the older form) registers as a policy named after its entry point."""
        if callable(loaded) and not isinstance(loaded, PolicyPlugin):
            origin = f"entry point {point.name} = {point.value} ({self.group})"
            entry = PolicyPlugin(tag=point.name, options=None, factory=loaded)
            return [self.register(entry, origin)]
        return super().register_loaded(point, loaded)


POLICIES: Registry[PolicyPlugin] = _PolicyRegistry(
    "policy", ENTRY_POINT_GROUP, PolicyPlugin, ("scheduler.policies",), key="name"
)


class UnknownPolicyError(LookupError):
    """No policy of that name is built in or installed."""


def _factory(entry: PolicyPlugin) -> PolicyFactory:
    def build(config: PolicyConfig) -> Policy:
        if entry.options is None:
            return entry.factory(config)
        return entry.factory(config.settings(entry.tag))

    return build


def builtin_policies() -> dict[str, PolicyFactory]:
    """The policies shipped with wattmux, by name."""
    return {
        entry.tag: _factory(entry)
        for entry in POLICIES.entries()
        if entry.origin.startswith("scheduler.policies.")
    }


def available_policies() -> dict[str, PolicyFactory]:
    """Built-in policies plus those installed through the ``wattmux.policies`` entry points."""
    return {entry.tag: _factory(entry) for entry in POLICIES.entries()}


def create_policy(config: PolicyConfig) -> Policy:
    """Build the configured policy or raise UnknownPolicyError listing the known names."""
    factories = available_policies()
    try:
        factory = factories[config.name]
    except KeyError:
        known = ", ".join(sorted(factories))
        raise UnknownPolicyError(f"unknown policy {config.name!r}; known: {known}") from None
    return factory(config)
