"""Loading a wattmux configuration: a TOML file plus WATTMUX_* environment overrides.

Every error names the file, the field path and what was expected.  Environment
variables override file values: ``WATTMUX_<SECTION>__<KEY>`` (double underscore
between levels), for example ``WATTMUX_GUARD__MIN_DWELL_SECONDS=60`` or
``WATTMUX_API__LISTEN=0.0.0.0:9470``.  The models are ``scheduler.config.schema``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scheduler.config.schema import WattmuxConfig

ENV_PREFIX = "WATTMUX_"


class ConfigError(Exception):
    """A configuration could not be loaded; ``problems`` lists every error found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write WATTMUX_A__B=value into data["a"]["b"]; return {dotted path: variable name}."""
    applied: dict[str, str] = {}
    for variable, value in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable[len(ENV_PREFIX) :]:
            continue
        path = [part.lower() for part in variable[len(ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[path[-1]] = value
            applied[".".join(path)] = variable
    return applied


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def parse_config(
    data: dict[str, Any], source: str = "<config>", environ: Mapping[str, str] | None = None
) -> WattmuxConfig:
    """Validate already-parsed TOML data (plus env overrides) or raise ConfigError."""
    applied = _apply_env(data, os.environ if environ is None else environ)
    try:
        return WattmuxConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = _format_loc(error["loc"])
            origin = f" (from {applied[path]})" if path in applied else ""
            got = error.get("input")
            message = error["msg"].removeprefix("Value error, ")
            shown = isinstance(got, dict | list) or repr(got) in message
            got_text = "" if shown else f" (got {got!r})"
            problems.append(f"{path}{origin}: {message}{got_text}")
        raise ConfigError(source, problems) from exc


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> WattmuxConfig:
    """Read and validate a TOML config file, or raise ConfigError naming every problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax: {exc}"]) from exc
    return parse_config(data, str(path), environ)


def summarize(config: WattmuxConfig) -> list[str]:
    """Human-readable lines describing what a config loaded."""
    devices = config.all_devices()
    by_model: dict[str, int] = {}
    for device in devices:
        by_model[device.model] = by_model.get(device.model, 0) + 1
    nominal_kw = sum(d.nominal_power_w for d in devices) / 1000
    nominal_phs = sum(d.nominal_hashrate_hs for d in devices) / 1e15
    models = ", ".join(f"{count} x {model}" for model, count in sorted(by_model.items()))
    feeds = ", ".join(feed.driver for feed in config.market) or "none"
    return [
        f"site {config.site.name} ({config.site.timezone}), power cap {config.site.power_cap_kw:g} kW",
        f"devices: {len(devices)} ({models}); nominal {nominal_kw:,.1f} kW, {nominal_phs:,.2f} PH/s",
        f"pools: {', '.join(p.name for p in config.pools)}",
        f"policy: {config.policy.name} (hysteresis {config.policy.hysteresis_usd_per_mwh:g} USD/MWh)",
        f"guard: min dwell {config.guard.min_dwell_seconds:g} s, stale price after "
        f"{config.guard.stale_price_seconds:g} s -> {config.guard.stale_action}",
        f"control: tick {config.control.tick_seconds:g} s",
        f"market feeds: {feeds}",
        f"store: {config.store.path}",
        f"api and /metrics: http://{config.api.listen}",
    ]


def range_warnings(config: WattmuxConfig) -> list[str]:
    """Legal but suspicious ranges: one that crosses a /24 boundary (x.y.z.255, x.y.z+1.0).

    Such a range is accepted (sites of thousands of miners span several /24s), but on a
    site cut into /24 subnets its addresses ending in .255 and .0 are broadcast and network
    addresses, not miners: split the range at the boundary there.
    """
    out = []
    for index, entry in enumerate(config.device_ranges):
        first = int(entry.first_address)
        last = first + entry.count - 1
        if first >> 8 != last >> 8:
            out.append(
                f"device_ranges[{index}] ({entry.id_prefix}): {entry.first_address} + "
                f"{entry.count} addresses crosses a /24 boundary (up to "
                f"{entry.first_address + (entry.count - 1)}); on /24 subnets the addresses "
                "ending in .255 and .0 are not miners: split the range at the boundary"
            )
    return out
