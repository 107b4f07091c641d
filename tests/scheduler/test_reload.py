"""Live reload (scheduler.reload): what is applied, what needs a restart, what is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.api.auth import hash_token, new_token
from scheduler.config.loading import load_config
from scheduler.config.schema import WattmuxConfig
from scheduler.core.state import FleetState
from scheduler.reload import Reloader, ReloadRefused
from scheduler.store.operator import ControlStore
from tests.scheduler.api_fixtures import small_config_file


class Running:
    def __init__(self, config: WattmuxConfig) -> None:
        self.config = config
        self.state = FleetState(config.all_devices())


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Running, Reloader, dict[str, Any], list[Any]]:
    path = small_config_file(tmp_path)
    running = Running(load_config(path))
    telemetry: dict[str, Any] = {d: f"driver-{d}" for d in running.state.devices}
    controls = dict(telemetry)
    calls: list[Any] = []
    reloader = Reloader(
        running,
        path,
        drivers_for=lambda config: {d.id: f"new-{d.id}" for d in config.all_devices()},
        telemetry=telemetry,
        controls=controls,
        rebuild_policy=lambda config: calls.append(("policy", config.policy)),
        store=ControlStore.open(tmp_path / "w.sqlite"),
        replace_tokens=lambda config: calls.append(("tokens", config.api.tokens)),
    )
    return path, running, reloader, {"telemetry": telemetry, "controls": controls}, calls


def test_inventory_tokens_and_policy_are_applied_the_rest_needs_a_restart(
    setup: tuple[Path, Running, Reloader, dict[str, Any], list[Any]],
) -> None:
    path, running, reloader, maps, calls = setup
    text = path.read_text()
    text = text.replace('id = "m3"\nmodel = "S21 Pro"', 'id = "m4"\nmodel = "S21 Pro"')
    text = text.replace('address = "127.70.0.22"', 'address = "127.70.0.42"')  # m2 moves
    text = text.replace("power_cap_kw = 100.0", "power_cap_kw = 80.0")
    token = hash_token(new_token())
    text = text.replace(
        '[api]\nlisten = "127.70.0.1:9470"',
        f'[api]\nlisten = "127.70.0.1:9470"\ntokens = [{{ name = "x", role = "viewer", sha256 = "{token}" }}]'
        "\n\n[policy]\nhysteresis_usd_per_mwh = 9.0",
    )
    path.write_text(text)
    result = reloader.reload()
    assert (result.added, result.removed, result.changed) == (["m4"], ["m3"], ["m2"])
    assert result.tokens_changed and result.policy_changed and result.tokens == 1
    assert result.restart_needed == ["site"]
    assert "needs a restart to apply: site" in result.summary()
    assert sorted(running.state.devices) == ["m1", "m2", "m4"]
    assert running.state.devices["m2"].address == "127.70.0.42"
    assert maps["telemetry"] == {"m1": "driver-m1", "m2": "new-m2", "m4": "new-m4"}
    assert maps["controls"]["m3"] == "driver-m3"  # a command in flight still finishes
    assert running.state.status["m4"].last_error == "not polled yet"
    assert running.config.site.power_cap_kw == 100.0  # not applied
    assert running.config.policy.hysteresis_usd_per_mwh == 9.0
    assert [c[0] for c in calls] == ["tokens", "policy"]
    [audit] = reloader.store.api_audit()  # type: ignore[union-attr]
    assert audit.result == "ok" and json.loads(audit.after)["devices"] == 3


def test_a_bad_file_or_token_changes_nothing(
    setup: tuple[Path, Running, Reloader, dict[str, Any], list[Any]],
) -> None:
    path, running, reloader, maps, calls = setup
    before = dict(running.state.devices)
    good = path.read_text()
    path.write_text(good.replace('id = "m3"', "id = 3"))
    with pytest.raises(ReloadRefused) as refused:
        reloader.reload()
    assert "\n" not in refused.value.message and "devices" in refused.value.message

    def bad_tokens(_config: WattmuxConfig) -> None:
        raise ValueError("token 'x': hash must look like sha256:<64 hex>")

    reloader.replace_tokens = bad_tokens
    token = hash_token(new_token())
    path.write_text(
        good.replace('id = "m3"', 'id = "m9"').replace(
            '[api]\nlisten = "127.70.0.1:9470"',
            f'[api]\nlisten = "127.70.0.1:9470"\ntokens = [{{ name = "x", role = "viewer", sha256 = "{token}" }}]',
        )
    )
    with pytest.raises(ReloadRefused, match=r"api\.tokens"):
        reloader.reload()
    assert running.state.devices == before and sorted(maps["telemetry"]) == ["m1", "m2", "m3"]
    assert calls == [] and reloader.failures == 2
    assert [r.result for r in reloader.store.api_audit()] == ["refused", "refused"]  # type: ignore[union-attr]
