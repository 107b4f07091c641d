"""Rack and position of each machine: the config's ``location`` fields and a CSV import.

The CSV (``[site] locations_csv``) has one machine a line, ``address,rack,position``
(a header line with those names is allowed).  It wins over the config.  A bad
line is skipped with a one-line problem (line number and why), counted, and
never placed; the file is bounded in size and lines.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from pathlib import Path

from scheduler.core.model import Device

MAX_CSV_BYTES = 8 * 1024 * 1024
MAX_CSV_LINES = 200_000
RACK = re.compile(r"^[A-Za-z0-9_.:/ -]{1,32}$")


def parse_locations_csv(
    text: str, devices: Mapping[str, Device]
) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """(device id -> (rack, position), problems) from CSV text of address,rack,position."""
    by_address: dict[str, list[str]] = {}
    for device in devices.values():
        by_address.setdefault(device.address, []).append(device.id)
    placed: dict[str, tuple[str, int]] = {}
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    for number, fields in enumerate(reader, start=1):
        if number > MAX_CSV_LINES:
            problems.append(f"line {number}: more than {MAX_CSV_LINES} lines; the rest is ignored")
            break
        if not fields or all(not f.strip() for f in fields):
            continue
        cells = [f.strip() for f in fields]
        if number == 1 and [c.lower() for c in cells] == ["address", "rack", "position"]:
            continue
        if len(cells) != 3:
            problems.append(
                f"line {number}: expected address,rack,position, got {len(cells)} fields"
            )
            continue
        address, rack, position = cells
        ids = by_address.get(address)
        if not ids:
            problems.append(f"line {number}: no configured machine has address {address[:64]!r}")
            continue
        if not RACK.match(rack):
            problems.append(
                f"line {number}: rack {rack[:40]!r} must be 1-32 letters, digits, _.:/ -"
            )
            continue
        if not position.isdigit() or not 1 <= int(position) <= 10000:
            problems.append(f"line {number}: position {position[:20]!r} must be 1..10000")
            continue
        for device_id in ids:
            placed[device_id] = (rack, int(position))
    return placed, problems


def load_locations(
    configured: Mapping[str, tuple[str, int]],
    csv_path: Path | None,
    devices: Mapping[str, Device],
) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """The config's locations, overlaid with the CSV's when one is given; and the problems."""
    placed = dict(configured)
    if csv_path is None:
        return placed, []
    try:
        with csv_path.open("rb") as handle:
            raw = handle.read(MAX_CSV_BYTES + 1)
    except OSError as exc:
        return placed, [f"{csv_path}: cannot read: {exc.strerror or exc}"]
    if len(raw) > MAX_CSV_BYTES:
        return placed, [f"{csv_path}: larger than {MAX_CSV_BYTES} bytes; not read"]
    text = raw.decode("utf-8-sig", errors="replace")
    from_csv, problems = parse_locations_csv(text, devices)
    placed.update(from_csv)
    return placed, [f"{csv_path.name}: {p}" for p in problems]
