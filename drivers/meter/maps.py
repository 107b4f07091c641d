"""Register maps of site meters, as data: which Modbus registers hold site power and energy.

A map is a JSON file (the bundled ones live in ``drivers/meter/maps/``; an
operator may name a file of their own).  Each point says the register table
(``holding`` or ``input``), its address (0-based, as on the wire), its type
(``int16``, ``uint16``, ``int32``, ``uint32``, ``float32``) and a constant
``scale``.  A SunSpec map gives ``sunspec.models`` instead of a table and
addresses: the driver walks the SunSpec model chain from ``sunspec.base``
("SunS", then ID/L headers) to the first listed model, and each point is a
``model_offset`` from that model's first data register with its scale factor
(``sunssf``) at ``scale_offset``.  The same map encodes registers for the
simulated meter (``encode``), so the simulator and the driver agree by
construction and the tests check both against pymodbus on the wire.
"""

from __future__ import annotations

import json
import math
import struct
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAPS_DIR = Path(__file__).parent / "maps"
SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_END = 0xFFFF
SUNSPEC_NOT_IMPLEMENTED = {"int16": 0x8000, "uint16": 0xFFFF, "uint32": 0xFFFFFFFF}
MAX_MAP_BYTES = 64 * 1024

PointType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
POINT_NAMES = ("power_w", "energy_import_kwh")


class MapError(ValueError):
    """A register map that cannot be used (one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Strict):
    """One value of the meter."""

    table: Literal["holding", "input"] = "holding"
    address: int | None = Field(None, ge=0, le=65535)
    model_offset: int | None = Field(None, ge=0, le=1000)
    type: PointType
    scale: float = Field(1.0, allow_inf_nan=False)
    scale_offset: int | None = Field(None, ge=0, le=1000, description="SunSpec sunssf offset")


class SunSpec(_Strict):
    """Where the SunSpec model chain starts and which meter models the map reads."""

    base: int = Field(40000, ge=0, le=65000)
    models: list[int] = Field(min_length=1, max_length=8)


class RegisterMap(_Strict):
    """A meter's register map."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    word_order: Literal["big", "little"] = "big"
    sunspec: SunSpec | None = None
    points: dict[Literal["power_w", "energy_import_kwh"], Point]

    @model_validator(mode="after")
    def _check(self) -> RegisterMap:
        if "power_w" not in self.points:
            raise ValueError("points.power_w is required")
        for name, point in self.points.items():
            if self.sunspec is not None and point.model_offset is None:
                raise ValueError(f"points.{name}: a SunSpec map needs model_offset")
            if self.sunspec is None and point.address is None:
                raise ValueError(f"points.{name}: address is required")
        return self

    def decode(self, point: Point, registers: list[int]) -> float | None:
        """The point's value from its registers (None: SunSpec's "not implemented")."""
        words = list(registers[: WIDTH[point.type]])
        if len(words) != WIDTH[point.type]:
            raise MapError(f"{point.type} needs {WIDTH[point.type]} registers")
        if self.word_order == "little":
            words.reverse()
        raw = b"".join(w.to_bytes(2, "big") for w in words)
        if self.sunspec is not None:
            marker = SUNSPEC_NOT_IMPLEMENTED.get(point.type)
            if marker is not None and int.from_bytes(raw, "big") == marker:
                return None
        value: float = {
            "int16": lambda b: struct.unpack(">h", b)[0],
            "uint16": lambda b: struct.unpack(">H", b)[0],
            "int32": lambda b: struct.unpack(">i", b)[0],
            "uint32": lambda b: struct.unpack(">I", b)[0],
            "float32": lambda b: struct.unpack(">f", b)[0],
        }[point.type](raw)
        return value * point.scale

    def encode(self, point: Point, value: float, scale_factor: int = 0) -> list[int]:
        """Registers holding ``value`` (the simulated meter); ``scale_factor``: SunSpec sunssf."""
        raw_value = value / point.scale / (10.0**scale_factor)
        if point.type == "float32":
            raw = struct.pack(">f", raw_value)
        else:
            fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}[point.type]
            raw = struct.pack(fmt, round(raw_value))
        words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
        if self.word_order == "little":
            words.reverse()
        return words


def bundled_maps() -> tuple[str, ...]:
    """The names of the register maps shipped with wattmux."""
    return tuple(sorted(p.stem for p in MAPS_DIR.glob("*.json")))


@cache
def _load_path(path: Path) -> RegisterMap:
    try:
        if path.stat().st_size > MAX_MAP_BYTES:
            raise MapError(f"{path}: larger than {MAX_MAP_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
        return RegisterMap.model_validate(data)
    except OSError as exc:
        raise MapError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise MapError(f"{path}: not a register map: {detail}") from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def load_map(name_or_path: str) -> RegisterMap:
    """A bundled map by name (``sunspec-203``, ``eastron-sdm630``, ...) or a JSON file's path."""
    if name_or_path in bundled_maps():
        return _load_path(MAPS_DIR / f"{name_or_path}.json")
    path = Path(name_or_path)
    if path.suffix != ".json":
        raise MapError(
            f"unknown register map {name_or_path!r}: one of {', '.join(bundled_maps())}, "
            "or a .json file"
        )
    return _load_path(path)


def plausible_power_w(value: float | None, max_w: float) -> bool:
    """A site power a meter may report: finite, within +/- max_w."""
    return value is not None and math.isfinite(value) and abs(value) <= max_w
