"""Config loading: the example file, every error named with its field path, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.cli.main import main
from scheduler.config.loading import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "wattmux.example.toml"


def minimal(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "site": {"power_cap_kw": 100.0},
        "pools": [{"name": "main", "url": "stratum+tcp://pool.invalid:3333", "user": "w"}],
        "devices": [{"id": "m1", "address": "127.0.0.5", "model": "S21", "pools": ["main"]}],
    }
    data.update(overrides)
    return data


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.site.timezone == "America/Chicago"
    assert len(config.all_devices()) == 121
    text = EXAMPLE.read_text()
    # every field of every section appears in the example with a comment
    for section in ("site", "control", "economics", "policy", "guard", "store", "api"):
        model = getattr(config, section)
        for field_name in type(model).model_fields:
            documented = f"\n{field_name} = " in text or f"\n# {field_name} = " in text
            assert documented, f"[{section}] {field_name} not documented"


def test_device_range_expands_to_consecutive_addresses() -> None:
    data = minimal(
        devices=[],
        device_ranges=[
            {
                "id_prefix": "r",
                "first_address": "127.0.0.250",
                "count": 10,
                "model": "S21 XP",
                "pools": ["main"],
            }
        ],
    )
    devices = parse_config(data, environ={}).all_devices()
    assert [d.id for d in devices[:2]] == ["r-001", "r-002"]
    assert devices[6].address == "127.0.1.0"
    assert devices[0].efficiency_j_per_th == pytest.approx(13.5)


def test_every_error_names_its_field_path() -> None:
    data = minimal(
        site={"power_cap_kw": -5, "timezone": "Mars/Olympus"},
        control={"tick_seconds": 0, "typo_key": 1},
        devices=[
            {"id": "m1", "address": "not-an-ip", "model": "S21", "pools": ["main"]},
            {"id": "m2", "address": "127.0.0.9", "model": "S9", "pools": ["main"]},
        ],
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "site.toml", environ={})
    problems = "\n".join(caught.value.problems)
    assert caught.value.source == "site.toml"
    for expected in (
        "site.power_cap_kw: Input should be greater than 0 (got -5)",
        "site.timezone: unknown IANA time zone 'Mars/Olympus'",
        "control.tick_seconds: Input should be greater than 0",
        "control.typo_key: Extra inputs are not permitted",
        "devices[1]: model 'S9' is not in the model catalog: give nominal_hashrate_ths and",
        "devices[0].address:",
    ):
        assert expected in problems


def test_cross_checks_unknown_pool_and_duplicates() -> None:
    data = minimal(
        devices=[
            {"id": "m1", "address": "127.0.0.5", "model": "S21", "pools": ["nope"]},
            {"id": "m1", "address": "127.0.0.5", "model": "S21", "pools": ["main"]},
        ]
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={})
    text = str(caught.value)
    assert "devices[0].pools: unknown pool 'nope'" in text
    assert "device id 'm1' appears twice" in text
    assert "address 127.0.0.5:4028 appears twice" in text


def test_env_overrides_and_names_the_variable_on_error() -> None:
    config = parse_config(minimal(), environ={"WATTMUX_GUARD__MIN_DWELL_SECONDS": "42"})
    assert config.guard.min_dwell_seconds == 42.0
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(), environ={"WATTMUX_API__LISTEN": "nohost"})
    assert "api.listen (from WATTMUX_API__LISTEN): expected HOST:PORT" in str(caught.value)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[site]\npower_cap_kw = = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.source == str(path)
    assert "line 2" in caught.value.problems[0]


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "devices: 121 (120 x S19j Pro, 1 x S21)" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[site]\npower_cap_kw = 0\n[[pools]]\nname = "p"\nurl = "http://x"\nuser = "u"\n'
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: site.power_cap_kw: Input should be greater than 0" in err
    assert f"{bad}: pools[0].url:" in err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
