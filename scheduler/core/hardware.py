"""The model catalog: nominal facts per miner model (stock settings), read from ``catalog.toml``.

``catalog.toml`` ships in the package next to this module.  ``MODELS`` maps each
canonical model name to its facts; ``lookup`` resolves any string firmware reports
("Antminer S21 XP Hyd.", "M60S_VK40", "S21Pro", "Antminer S21 Pro (Vnish 1.2.7)")
to its catalog entry, or None for a model the catalog does not hold (a config entry
then gives its nominal figures itself).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from scheduler.core.model import Device, DeviceKind

CATALOG_FILE = "catalog.toml"


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """Stock hash rate, power and limits of one miner model."""

    hashrate_ths: float
    power_w: float
    sleep_power_w: float
    max_temperature_c: float
    name: str = ""  # canonical catalog name
    power_target_min_w: float = 0.0  # lowest power target wattmux asks for
    power_target_max_w: float = 0.0  # highest (stock power: wattmux does not overclock)
    aliases: tuple[str, ...] = ()
    hashboards: int = 0  # 0: not known (varies by variant)
    chips_per_board: int = 0

    @property
    def chips_expected(self) -> int | None:
        """Chips of all boards of a stock unit, None when the catalog does not know."""
        return self.hashboards * self.chips_per_board or None

    @property
    def efficiency_j_per_th(self) -> float:
        """Joules per terahash at stock settings."""
        return self.power_w / self.hashrate_ths


# Makes firmware puts before a model, and marks after it, that name no model of their own.
_MAKES = re.compile(
    r"^(?:bitmain|antminer|microbt|whatsminer|canaan|avalonminer|avalon|auradine|teraflux)\s*"
)
_TRAILING_MARK = re.compile(r"\s*\([^)]*\)\s*$")  # "(Vnish 1.2.7)"
_VARIANT = re.compile(r"_v[a-z0-9]{1,8}$")  # Whatsminer hardware variant "_VK40"
_HYD = re.compile(r"\bhyd\b\.?")
_PLUS = re.compile(r"\s*\bplus\b")
_SEPARATORS = re.compile(r"[\s_\-.]+")
MAX_MODEL_CHARS = 64


def normalize(model: str) -> str:
    """The key a model string is looked up by: case, spaces, make and variant marks dropped."""
    text = _TRAILING_MARK.sub("", model.strip().lower()[:MAX_MODEL_CHARS])
    for _ in range(2):  # "Bitmain Antminer S21"
        text = _MAKES.sub("", text)
    text = _VARIANT.sub("", text)
    text = _HYD.sub("hydro", text)
    text = _PLUS.sub("+", text)
    return _SEPARATORS.sub("", text)


class CatalogError(ValueError):
    """The catalog file is malformed (a packaging bug, not an operator error)."""


def _facts(name: str, table: dict[str, Any]) -> ModelFacts:
    expected = {
        "hashrate_ths",
        "power_w",
        "power_target_w",
        "sleep_power_w",
        "max_temperature_c",
        "aliases",
    }
    optional = {"hashboards", "chips_per_board"}
    if not expected <= set(table) <= expected | optional:
        raise CatalogError(
            f"catalog model {name!r}: keys {sorted(table)}, expected {sorted(expected)}"
        )
    low, high = (float(v) for v in table["power_target_w"])
    facts = ModelFacts(
        hashrate_ths=float(table["hashrate_ths"]),
        power_w=float(table["power_w"]),
        sleep_power_w=float(table["sleep_power_w"]),
        max_temperature_c=float(table["max_temperature_c"]),
        name=name,
        power_target_min_w=low,
        power_target_max_w=high,
        aliases=tuple(str(a) for a in table["aliases"]),
        hashboards=int(table.get("hashboards", 0)),
        chips_per_board=int(table.get("chips_per_board", 0)),
    )
    if not (0 < facts.sleep_power_w < low <= high <= facts.power_w and facts.hashrate_ths > 0):
        raise CatalogError(f"catalog model {name!r}: figures out of order")
    return facts


def parse_catalog(text: str) -> tuple[dict[str, ModelFacts], dict[str, ModelFacts]]:
    """(canonical name -> facts, normalized name or alias -> facts) from catalog TOML text."""
    data = tomllib.loads(text)
    models = {name: _facts(name, table) for name, table in data.get("models", {}).items()}
    index: dict[str, ModelFacts] = {}
    for facts in models.values():
        for spelling in (facts.name, *facts.aliases):
            key = normalize(spelling)
            holder = index.setdefault(key, facts)
            if holder is not facts:
                raise CatalogError(f"{spelling!r} names both {holder.name!r} and {facts.name!r}")
    return models, index


MODELS, _INDEX = parse_catalog(
    resources.files(__package__).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
)


def lookup(model: str) -> ModelFacts | None:
    """The catalog entry a reported or configured model string names, or None."""
    return _INDEX.get(normalize(model))


def canonical(model: str) -> str:
    """The catalog name of ``model``, or ``model`` itself when the catalog does not hold it."""
    facts = lookup(model)
    return facts.name if facts is not None else model


def uncatalogued_models(devices: Iterable[Device]) -> dict[str, int]:
    """Model -> number of ASICs whose model the catalog lacks (their figures came from config)."""
    counts: dict[str, int] = {}
    for device in devices:
        if device.kind is DeviceKind.ASIC and lookup(device.model) is None:
            counts[device.model] = counts.get(device.model, 0) + 1
    return counts
