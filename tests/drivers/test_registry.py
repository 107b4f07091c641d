"""Registries: built-ins found by module scan, plugins by entry points, config derived from them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from drivers.asic.cgminer import CgminerDriver
from drivers.asic.config import CgminerFamilyOptions
from drivers.asic.discover import identify
from drivers.asic.registry import ASIC_DRIVERS, AsicPlugin, create_asic_driver
from drivers.market.registry import MARKET_FEEDS, FeedContext, MarketPlugin
from drivers.queues.registry import QUEUE_BACKENDS
from drivers.registry import PluginError, Registry
from drivers.sim.miner import SimMiner
from drivers.sim.site import SimSite, simulated_firmwares
from drivers.sim.whatsminer import SimWhatsminer
from scheduler.config.devices import pools_of
from scheduler.config.loading import ConfigError, parse_config
from scheduler.core.model import Device, DeviceKind, Pool
from scheduler.policies import POLICIES


class AvalonOptions(CgminerFamilyOptions):
    """A firmware no central file knows about."""

    driver: Literal["avalon"] = "avalon"
    fan_profile: str = "quiet"


class AvalonDriver(CgminerDriver):
    """It speaks the cgminer API."""


AVALON = AsicPlugin(
    tag="avalon", options=AvalonOptions, factory=AvalonDriver, version_keys=("AvalonMiner",)
)


@pytest.fixture
def avalon() -> Iterator[AsicPlugin]:
    ASIC_DRIVERS.register(AVALON, "tests")
    yield AVALON
    ASIC_DRIVERS.unregister("avalon")


def site(options: dict[str, object]) -> dict[str, object]:
    return {
        "site": {"name": "t", "power_cap_kw": 100.0},
        "pools": [{"name": "main", "url": "stratum+tcp://main.example:3333", "user": "w"}],
        "devices": [
            {"id": "a", "model": "S21", "address": "127.35.0.9", "pools": ["main"],
             "options": options},
        ],
    }  # fmt: skip


def test_every_builtin_declares_itself_in_its_own_module() -> None:
    assert set(ASIC_DRIVERS.tags()) >= {
        "cgminer",
        "luxos",
        "antminer",
        "braiins",
        "whatsminer",
        "asic-rs",
    }
    assert ASIC_DRIVERS.get("luxos").origin == "drivers.asic.luxos"
    assert set(MARKET_FEEDS.tags()) >= {
        "static",
        "ercot-replay",
        "btc-price",
        "mempool-network",
        "bitcoind",
        "ercot-rtm",
        "tariff",
    }
    assert set(QUEUE_BACKENDS.tags()) >= {"slurm", "webhook", "kubernetes"}
    assert set(POLICIES.tags()) >= {"breakeven", "max-margin", "demand-response", "schedule"}
    assert set(simulated_firmwares()) >= {"cgminer", "whatsminer", "braiins"}


def test_a_duplicate_tag_is_one_line_naming_both_origins() -> None:
    clash = AsicPlugin(tag="luxos", options=AvalonOptions, factory=AvalonDriver)
    with pytest.raises(PluginError) as caught:
        ASIC_DRIVERS.register(clash, "wattmux_clash.driver")
    message = str(caught.value)
    assert "\n" not in message
    assert "'luxos'" in message and "wattmux_clash.driver" in message
    assert "drivers.asic.luxos" in message
    assert ASIC_DRIVERS.get("luxos").options is not AvalonOptions


def test_a_firmware_registered_at_run_time_validates_builds_and_is_discovered(
    avalon: AsicPlugin,
) -> None:
    parsed = parse_config(site({"driver": "avalon", "fan_profile": "loud"}), environ={})
    options = parsed.devices[0].options
    assert isinstance(options, AvalonOptions) and options.fan_profile == "loud"
    assert parsed.all_devices()[0].driver == "avalon"
    driver = create_asic_driver(pools_of(parsed), options, concurrency=2)
    assert isinstance(driver, AvalonDriver)
    with pytest.raises(ConfigError, match=r"devices\[0\]\.options\.fan_speed: Extra inputs"):
        parse_config(site({"driver": "avalon", "fan_speed": 3}), environ={})
    found = identify("10.0.0.1", 4028, [{"AvalonMiner": "1.2", "CGMiner": "4.11.1"}])
    assert (found.driver, found.firmware) == ("avalon", "AvalonMiner 1.2")


def test_without_the_entry_the_tag_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\]\.options: unknown driver 'avalon'"):
        parse_config(site({"driver": "avalon"}), environ={})


def write_plugin(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(body)


PLUGIN_MODULE = """
from typing import Literal
from drivers.asic.config import CgminerFamilyOptions
from drivers.asic.cgminer import CgminerDriver
from drivers.asic.registry import AsicPlugin

class CanaanOptions(CgminerFamilyOptions):
    driver: Literal["canaan"] = "canaan"

PLUGINS = (AsicPlugin(tag="canaan", options=CanaanOptions, factory=CgminerDriver),)
"""


def fresh_registry() -> Registry[AsicPlugin]:
    return Registry("ASIC driver", "wattmux.asic_drivers", AsicPlugin)


def test_an_entry_point_naming_a_module_registers_its_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plugin(tmp_path, "wattmux_canaan_plugin", PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "wattmux_canaan_plugin", raising=False)
    registry = fresh_registry()
    point = EntryPoint("canaan", "wattmux_canaan_plugin", "wattmux.asic_drivers")
    [entry] = registry.load_entry_point(point)
    assert entry.tag == "canaan" and registry.get("canaan") is entry
    again = EntryPoint("again", "wattmux_canaan_plugin:PLUGINS", "wattmux.asic_drivers")
    assert registry.load_entry_point(again) == [entry]  # the same entry twice is no clash
    with pytest.raises(PluginError, match="'canaan' of another is already registered"):
        registry.register(AsicPlugin(tag="canaan", options=None, factory=CgminerDriver), "another")


def test_registry_load_reads_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import drivers.registry as registry_module

    point = EntryPoint("avalon", f"{__name__}:AVALON", "wattmux.asic_drivers")

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        return [point] if group == "wattmux.asic_drivers" else []

    monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
    registry = fresh_registry()
    registry.load()
    assert registry.tags() == ("avalon",)
    assert registry.get("avalon") == AVALON
    assert registry.get("avalon").origin.startswith("entry point avalon")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("wattmux_no_such_module", "cannot be loaded: ModuleNotFoundError"),
        ("json", "module json has no PLUGINS"),
        ("json:dumps", "expected a AsicPlugin, got function"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_it(value: str, expected: str) -> None:
    point = EntryPoint("broken", value, "wattmux.asic_drivers")
    with pytest.raises(PluginError, match=expected) as caught:
        fresh_registry().load_entry_point(point)
    assert "\n" not in str(caught.value)


def test_a_plugin_of_the_wrong_seam_is_refused() -> None:
    entry = MarketPlugin(tag="x", options=None, factory=lambda _o, _c: [])
    with pytest.raises(PluginError, match="expected a AsicPlugin, got MarketPlugin"):
        fresh_registry().register(entry, "tests")  # type: ignore[arg-type]


class FixedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    driver: Literal["fixed-price"] = "fixed-price"
    usd_per_mwh: float


class FixedFeed:
    def __init__(self, price: float) -> None:
        self.price = price

    async def fetch(self) -> dict[str, Any]:
        return {}


def test_a_market_feed_registered_at_run_time_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.daemon import build_feeds

    def feeds(options: FixedOptions, _context: FeedContext) -> list[Any]:
        return [FixedFeed(options.usd_per_mwh)]

    MARKET_FEEDS.register(MarketPlugin(tag="fixed-price", options=FixedOptions, factory=feeds))
    try:
        data = site({}) | {"market": [{"driver": "fixed-price", "usd_per_mwh": 30.0}]}
        parsed = parse_config(data, environ={})
        [feed] = build_feeds(parsed, clock=lambda: 0.0)
        assert isinstance(feed, FixedFeed) and feed.price == 30.0
        bad = site({}) | {"market": [{"driver": "fixed-price", "usd_per_mwh": "x"}]}
        with pytest.raises(ConfigError, match=r"market\[0\]\.usd_per_mwh: "):
            parse_config(bad, environ={})
    finally:
        MARKET_FEEDS.unregister("fixed-price")


def test_the_simulated_site_plays_each_firmware_by_its_entry() -> None:
    def device(device_id: str, driver: str, address: str) -> Device:
        return Device(device_id, DeviceKind.ASIC, "S21", driver, address, 0, 200e12, 3500.0)

    pools = [Pool("main", "stratum+tcp://main.example:3333", "w")]
    sim = SimSite(
        [
            device("w", "whatsminer", "127.35.1.1"),
            device("b", "braiins", "127.35.1.2"),
            device("l", "luxos", "127.35.1.3"),
        ],
        pools,
        port=0,
    )
    assert isinstance(sim.miners["w"], SimWhatsminer)
    assert type(sim.miners["l"]) is SimMiner
    assert set(sim.braiins) == {"b"} and set(sim.companions) == {"b"}
