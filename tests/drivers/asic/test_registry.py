"""The driver tag in the config picks the personality through the ASIC registry."""

from __future__ import annotations

import pytest

from drivers.asic.cgminer import CgminerDriver
from drivers.asic.luxos import LuxosDriver
from drivers.asic.registry import create_asic_driver
from scheduler.config.devices import pools_of
from scheduler.config.loading import ConfigError, parse_config


def config(options: dict[str, object]) -> dict[str, object]:
    return {
        "site": {"name": "t", "power_cap_kw": 100.0},
        "pools": [{"name": "main", "url": "stratum+tcp://main.example:3333", "user": "w"}],
        "devices": [
            {
                "id": "a",
                "model": "S21",
                "address": "127.35.0.1",
                "pools": ["main"],
                "options": options,
            }
        ],
    }


def test_luxos_options_build_a_luxos_driver() -> None:
    parsed = parse_config(config({"driver": "luxos", "power_tolerance": 0.05}), environ={})
    entry = parsed.devices[0]
    assert parsed.all_devices()[0].driver == "luxos"
    driver = create_asic_driver(pools_of(parsed), entry.options, concurrency=4)
    assert isinstance(driver, LuxosDriver)
    plain = parse_config(config({}), environ={})
    driver = create_asic_driver(pools_of(plain), plain.devices[0].options, concurrency=4)
    assert type(driver) is CgminerDriver


def test_an_unknown_driver_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\]\.options"):
        parse_config(config({"driver": "avalon"}), environ={})


def test_whatsminer_options_pick_the_driver_by_api_version() -> None:
    from drivers.asic.whatsminer import WhatsminerDriver
    from drivers.asic.whatsminer_v3 import WhatsminerV3Driver

    v2 = parse_config(config({"driver": "whatsminer", "password": "s3cret"}), environ={})
    driver = create_asic_driver(pools_of(v2), v2.devices[0].options, concurrency=4)
    assert isinstance(driver, WhatsminerDriver) and v2.all_devices()[0].port == 4028
    v3 = parse_config(config({"driver": "whatsminer", "api_version": 3}), environ={})
    driver = create_asic_driver(pools_of(v3), v3.devices[0].options, concurrency=4)
    assert isinstance(driver, WhatsminerV3Driver) and v3.all_devices()[0].port == 4433
    with pytest.raises(ConfigError, match=r"devices\[0\]\.options"):
        parse_config(config({"driver": "whatsminer", "api_version": 4}), environ={})


@pytest.mark.parametrize("driver", ["cgminer", "luxos", "antminer", "braiins", "whatsminer"])
def test_an_option_error_names_the_field_under_options_for_every_firmware(driver: str) -> None:
    # Whatsminer's errors were reported under options.whatsminer (its tag was missing
    # from the list of tags the error paths leave out); every firmware now reads the same.
    with pytest.raises(ConfigError) as caught:
        parse_config(config({"driver": driver, "timeout_seconds": -1}), environ={})
    assert caught.value.problems[0].startswith("devices[0].options.timeout_seconds: ")
