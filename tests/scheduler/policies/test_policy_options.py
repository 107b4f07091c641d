"""Each policy's settings live in its own options model; the [policy] keys stay valid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ConfigDict, Field

from scheduler.config.loading import ConfigError, parse_config
from scheduler.config.schema import PolicyConfig
from scheduler.core.model import Plan, Snapshot
from scheduler.policies import POLICIES, PolicyPlugin, available_policies, create_policy
from scheduler.policies.breakeven import BreakevenOptions
from scheduler.policies.max_margin import MaxMarginOptions, MaxMarginPolicy
from scheduler.policies.schedule import ScheduleOptions


class ThresholdOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold_usd_per_mwh: float = Field(50.0, ge=0)


class ThresholdPolicy:
    name = "threshold"

    def __init__(self, options: ThresholdOptions) -> None:
        self.options = options

    def plan(self, snapshot: Snapshot) -> Plan:
        return Plan(created_at=snapshot.now, assignments=())


@pytest.fixture
def threshold() -> Iterator[None]:
    POLICIES.register(
        PolicyPlugin(tag="threshold", options=ThresholdOptions, factory=ThresholdPolicy), "tests"
    )
    yield
    POLICIES.unregister("threshold")


def site(policy: dict[str, object]) -> dict[str, object]:
    return {
        "site": {"name": "t", "power_cap_kw": 100.0, "timezone": "America/Chicago"},
        "pools": [{"name": "main", "url": "stratum+tcp://main.example:3333", "user": "w"}],
        "devices": [{"id": "a", "model": "S21", "address": "127.0.0.9", "pools": ["main"]}],
        "policy": policy,
    }


def test_each_shipped_policy_gets_only_its_own_settings() -> None:
    config = PolicyConfig(hysteresis_usd_per_mwh=7.0, power_levels=[1.0, 0.5, 0.5])
    assert config.settings("breakeven") == BreakevenOptions(hysteresis_usd_per_mwh=7.0)
    max_margin = config.settings("max-margin")
    assert type(max_margin) is MaxMarginOptions and max_margin.power_levels == [0.5, 1.0]
    assert type(config.settings("schedule")) is ScheduleOptions
    assert type(config.settings("demand-response")) is BreakevenOptions


def test_a_table_of_a_shipped_policy_takes_precedence_over_the_flat_keys() -> None:
    parsed = parse_config(
        site(
            {
                "name": "max-margin",
                "sleep_band_usd_per_mwh": 1.0,
                "options": {"max-margin": {"sleep_band_usd_per_mwh": 4.0}},
            }
        ),
        environ={},
    )
    policy = create_policy(parsed.policy)
    assert isinstance(policy, MaxMarginPolicy) and policy.sleep_band_usd_per_mwh == 4.0
    assert parsed.policy.settings("schedule").schedule_timezone == "America/Chicago"  # type: ignore[attr-defined]


def test_a_policy_registered_at_run_time_has_settings_of_its_own(threshold: None) -> None:
    data = site({"name": "threshold", "options": {"threshold": {"threshold_usd_per_mwh": 42}}})
    parsed = parse_config(data, environ={})
    policy = create_policy(parsed.policy)
    assert isinstance(policy, ThresholdPolicy)
    assert policy.options.threshold_usd_per_mwh == 42.0
    assert "threshold" in available_policies()
    # the daemon's policy switch builds it from the same section
    assert isinstance(available_policies()["threshold"](parsed.policy), ThresholdPolicy)


def test_a_bad_setting_names_its_path_under_the_policy_table(threshold: None) -> None:
    data = site({"name": "threshold", "options": {"threshold": {"threshold_usd_per_mwh": -1}}})
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={})
    assert caught.value.problems[0].startswith(
        "policy.options.threshold.threshold_usd_per_mwh: Input should be greater than or equal"
    )
    data = site({"options": {"threshold": {"typo": 1}}})
    with pytest.raises(ConfigError, match=r"policy\.options\.threshold\.typo: Extra inputs"):
        parse_config(data, environ={})


def test_settings_of_an_unknown_policy_and_unknown_flat_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"policy\.options: .*unknown policy 'nope'"):
        parse_config(site({"options": {"nope": {}}}), environ={})
    with pytest.raises(ConfigError, match=r"policy\.threshold_usd_per_mwh: Extra inputs"):
        parse_config(site({"threshold_usd_per_mwh": 3}), environ={})
