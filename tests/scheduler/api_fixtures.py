"""A view of a small fleet with a real ControlStore, tokens per role, and app builders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.api.app import create_app
from scheduler.api.auth import Authenticator, RateLimiter, Role, TokenEntry, hash_token, new_token
from scheduler.api.wiring import ApiSecurity
from scheduler.config.loading import parse_config
from scheduler.config.schema import WattmuxConfig
from scheduler.control.service import ControlService
from scheduler.core.model import Plan
from scheduler.core.state import FleetState
from scheduler.observability.metrics import Metrics
from scheduler.policies import available_policies
from scheduler.store.operator import ControlStore

NOW = 5000.0
WALL = datetime(2024, 8, 20, 19, 30, tzinfo=UTC)


SMALL_TOML = """
[site]
name = "t"
power_cap_kw = 100.0

[store]
path = "{store}"

[api]
listen = "127.70.0.1:9470"

[[pools]]
name = "main"
url = "stratum+tcp://main.pool.invalid:3333"
user = "w"
{devices}
"""


def small_config_file(tmp_path: Path) -> Path:
    """small_config (without api options) as a TOML file, for live reload."""
    devices = "".join(
        f'\n[[devices]]\nid = "m{i}"\nmodel = "S21 Pro"\naddress = "127.70.0.{20 + i}"\n'
        'pools = ["main"]\n'
        for i in (1, 2, 3)
    )
    path = tmp_path / "wattmux.toml"
    path.write_text(SMALL_TOML.format(store=tmp_path / "w.sqlite", devices=devices))
    return path


def small_config(tmp_path: Path, **api: Any) -> WattmuxConfig:
    data: dict[str, Any] = {
        "site": {"name": "t", "power_cap_kw": 100.0},
        "store": {"path": str(tmp_path / "w.sqlite")},
        "api": {"listen": "127.70.0.1:9470", **api},
        "pools": [{"name": "main", "url": "stratum+tcp://main.pool.invalid:3333", "user": "w"}],
        "devices": [
            {"id": f"m{i}", "model": "S21 Pro", "address": f"127.70.0.{20 + i}", "pools": ["main"]}
            for i in (1, 2, 3)
        ],
    }
    return parse_config(data, "<test>", environ={})


@dataclass
class Tokens:
    """One token per role, plus their authenticator."""

    by_role: dict[Role, str] = field(default_factory=lambda: {role: new_token() for role in Role})

    def authenticator(self) -> Authenticator:
        return Authenticator(
            TokenEntry(f"{role.label}-1", role, hash_token(token))
            for role, token in self.by_role.items()
        )

    def header(self, role: Role) -> dict[str, str]:
        return {"authorization": f"Bearer {self.by_role[role]}"}


@dataclass
class ControlledView:
    """What the daemon gives the API: state, metrics, plan, clock, config, control."""

    state: FleetState
    metrics: Metrics
    config: WattmuxConfig
    control: ControlService | None
    plan: Plan | None = None
    maintenance: Any = None  # scheduler.control.maintenance.MaintenanceWindows
    reloader: Any = None  # scheduler.reload.Reloader
    accounting: Any = None  # scheduler.control.accounting.Accountant
    now: list[float] = field(default_factory=lambda: [NOW])
    ready: dict[str, bool] = field(
        default_factory=lambda: {"config": True, "store": True, "inputs": True, "reconciled": True}
    )

    def current_plan(self) -> Plan | None:
        return self.plan

    def clock(self) -> float:
        return self.now[0]

    def readiness(self) -> dict[str, bool]:
        return dict(self.ready)


def make_control(
    store: ControlStore, state: FleetState, wall: Callable[[], datetime] = lambda: WALL
) -> ControlService:
    return ControlService(
        store,
        state.devices,
        default_policy="breakeven",
        policies=list(available_policies()),
        wall_clock=wall,
    )


def build_app(
    view: ControlledView,
    tokens: Tokens,
    *,
    per_minute: float = 600.0,
    burst: int = 100,
    max_body_bytes: int = 4096,
    clock: Callable[[], float] | None = None,
) -> Any:
    limiter = RateLimiter(per_minute=per_minute, burst=burst)
    if clock is not None:
        limiter.clock = clock
    return create_app(view, ApiSecurity(tokens.authenticator(), limiter, max_body_bytes))
