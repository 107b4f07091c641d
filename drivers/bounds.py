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

The JSON checks are a few scans in C (bytes.count/translate/find/replace, one
regular expression with a literal prefix), linear in the reply's size.
"""

from __future__ import annotations

import math
import re
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

# Brackets become ( and ), digits 0, everything else is dropped or kept as it is.
_BRACKETS_ONLY: Final = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS: Final = bytes(c for c in range(256) if c not in b"[]{}")
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"0123456789", b"0" * 10)


def _has_long_number(raw: bytes, max_digits: int) -> bool:
    return b"0" * (max_digits + 1) in raw.translate(_DIGITS_AS_ZERO)


def _deeper_than(brackets: bytes, max_depth: int) -> bool:
    """Whether a string of ( and ) nests deeper than ``max_depth`` (all in C).

    A run of more than max_depth openers is too deep at once.  Otherwise each
    pass removes every innermost pair (at least one level); when no pair is
    left what remains is ``)))(((`` and its openers are the unclosed depth.
    """
    if b"(" * (max_depth + 1) in brackets:
        return True
    for _ in range(max_depth):
        reduced = brackets.replace(b"()", b"")
        if len(reduced) == len(brackets):
            return reduced.count(b"(") > max_depth
        brackets = reduced
        if not brackets:
            return False
    return True  # max_depth passes each removed a level, and brackets remain


def _outside_strings(raw: bytes) -> bytes:
    """The text outside JSON strings.

    Escaped backslashes go first, then escaped quotes, left to right as a JSON
    parser reads them; every remaining quote opens or closes a string.
    """
    return b"".join(raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[0::2])


def _long_string(max_string: int) -> re.Pattern[bytes]:
    """A quote followed by more than max_string bytes without a quote."""
    return re.compile(b'"[^"]{%d}' % (max_string + 1))


_LONG_STRING: Final = _long_string(MAX_STRING_BYTES)


def json_problem(
    raw: bytes,
    *,
    max_depth: int = MAX_NESTING_DEPTH,
    max_digits: int = MAX_NUMBER_DIGITS,
    max_string: int = MAX_STRING_BYTES,
) -> str | None:
    """Why ``raw`` is too deep, too long a number or too long a string to parse; None if fine.

    Every check is a few C scans of the bytes as they are; brackets and digits
    inside strings may make one fire, and only then is it confirmed on the text
    outside strings.  Unbalanced brackets are left to the parser, which refuses them.
    """
    if raw.count(b"[") + raw.count(b"{") > max_depth and _deeper_than(
        raw.translate(_BRACKETS_ONLY, _NOT_BRACKETS), max_depth
    ):
        outside = _outside_strings(raw)
        if _deeper_than(outside.translate(_BRACKETS_ONLY, _NOT_BRACKETS), max_depth):
            return f"nested more than {max_depth} deep"
    if _has_long_number(raw, max_digits) and _has_long_number(_outside_strings(raw), max_digits):
        return f"a number of more than {max_digits} digits"
    if len(raw) > max_string:
        pattern = _LONG_STRING if max_string == MAX_STRING_BYTES else _long_string(max_string)
        if pattern.search(raw) is not None:
            return f"a string of more than {max_string} bytes"
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
