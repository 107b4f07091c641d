"""Limits on what a device or feed may send us, and on what a reading may say.

Every decoder checks a reply against these before (or while) parsing it, so that
one hostile or broken device can cost at most a bounded amount of time and memory
and never raises anything but the driver's ``MalformedReply``:

    reply size      MAX_REPLY_BYTES (cgminer family, Whatsminer v2/v3 frames),
                    MAX_HTTP_BODY_BYTES (market feeds), MAX_GRPC_MESSAGE_BYTES
    JSON shape      MAX_NESTING_DEPTH brackets deep, MAX_NUMBER_DIGITS digits in one
                    number, MAX_STRING_BYTES in one string (``json_problem``)
    readings        hash rate, power and temperature finite and physically possible
                    (``implausible_reading``): a miner that reports -1e24 TH/s or
                    9,999 C is malformed, not stored

The JSON checks run in C (bytes.count, a regular expression, bytes.replace/split)
on the common reply and only do more when a shortcut cannot clear it.
"""

from __future__ import annotations

import math
import re
from itertools import accumulate
from typing import Final

MAX_REPLY_BYTES: Final = 1024 * 1024
MAX_HTTP_BODY_BYTES: Final = 4 * 1024 * 1024
MAX_GRPC_MESSAGE_BYTES: Final = 4 * 1024 * 1024
MAX_PROTO_NESTING_DEPTH: Final = 32

MAX_NESTING_DEPTH: Final = 64
MAX_NUMBER_DIGITS: Final = 64
MAX_STRING_BYTES: Final = 64 * 1024

# One device, generously: the largest miners hash ~0.5 PH/s and draw ~10 kW.
MAX_HASHRATE_HS: Final = 1e17
MAX_POWER_W: Final = 1_000_000.0
MIN_TEMPERATURE_C: Final = -40.0
MAX_TEMPERATURE_C: Final = 200.0

_LONG_NUMBER = re.compile(rb"[0-9]{%d}" % (MAX_NUMBER_DIGITS + 1))
# +1 for [ and {, -1 for ] and }, 0 for every other byte
_STEP: Final = [1 if c in b"[{" else -1 if c in b"]}" else 0 for c in range(256)]
_NOT_BRACKETS: Final = bytes(c for c in range(256) if c not in b"[]{}")


def _long_number(max_digits: int) -> re.Pattern[bytes]:
    return re.compile(rb"[0-9]{%d}" % (max_digits + 1))


def _outside_and_inside(raw: bytes) -> tuple[bytes, list[bytes]]:
    """The text outside JSON strings, and the strings' contents (escapes dropped).

    Escaped backslashes go first, then escaped quotes, left to right as a JSON
    parser reads them; every remaining quote opens or closes a string.
    """
    parts = raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')
    return b"".join(parts[0::2]), parts[1::2]


def json_problem(
    raw: bytes,
    *,
    max_depth: int = MAX_NESTING_DEPTH,
    max_digits: int = MAX_NUMBER_DIGITS,
    max_string: int = MAX_STRING_BYTES,
) -> str | None:
    """Why ``raw`` is too deep, too long a number or too long a string to parse; None if fine.

    Cheap on ordinary replies (a few C scans); the exact scan outside strings only
    runs when a shortcut cannot clear the reply.  Unbalanced brackets are left to
    the parser, which refuses them.
    """
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    number = _LONG_NUMBER if max_digits == MAX_NUMBER_DIGITS else _long_number(max_digits)
    long_number = number.search(raw) is not None
    long_string = len(raw) > max_string
    if not (deep or long_number or long_string):
        return None
    outside, strings = _outside_and_inside(raw)
    if long_string:
        longest = max(map(len, strings), default=0)
        if longest > max_string:
            return f"a string of {longest} bytes (limit {max_string})"
    if deep:
        steps = outside.translate(None, _NOT_BRACKETS)
        depth = max(accumulate(map(_STEP.__getitem__, steps)), default=0)
        if depth > max_depth:
            return f"nested {depth} deep (limit {max_depth})"
    if long_number:
        longest_digits = max(map(len, re.findall(rb"[0-9]+", outside)), default=0)
        if longest_digits > max_digits:
            return f"a number of {longest_digits} digits (limit {max_digits})"
    return None


def implausible_reading(
    hashrate_hs: float | None, power_w: float | None, temperature_c: float | None
) -> str | None:
    """Why a reading cannot be physical (negative, absurd or not finite); None if plausible."""
    if hashrate_hs is not None and not (
        math.isfinite(hashrate_hs) and 0.0 <= hashrate_hs <= MAX_HASHRATE_HS
    ):
        return f"hash rate {hashrate_hs:g} H/s outside [0, {MAX_HASHRATE_HS:g}]"
    if power_w is not None and not (math.isfinite(power_w) and 0.0 <= power_w <= MAX_POWER_W):
        return f"power {power_w:g} W outside [0, {MAX_POWER_W:g}]"
    if temperature_c is not None and not (
        math.isfinite(temperature_c) and MIN_TEMPERATURE_C <= temperature_c <= MAX_TEMPERATURE_C
    ):
        return (
            f"temperature {temperature_c:g} C outside "
            f"[{MIN_TEMPERATURE_C:g}, {MAX_TEMPERATURE_C:g}]"
        )
    return None
