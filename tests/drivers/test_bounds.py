"""drivers/bounds.py: JSON shape limits outside strings, and physical plausibility of readings."""

from __future__ import annotations

import json

import pytest

from drivers.bounds import (
    MAX_NESTING_DEPTH,
    MAX_NUMBER_DIGITS,
    MAX_STRING_BYTES,
    implausible_reading,
    json_problem,
)


def test_ordinary_replies_pass() -> None:
    reply = {"STATUS": [{"STATUS": "S", "Msg": "x"}], "SUMMARY": [{"MHS 5s": 1.5e8}]}
    assert json_problem(json.dumps(reply).encode()) is None
    nested = b"[" * MAX_NESTING_DEPTH + b"]" * MAX_NESTING_DEPTH
    assert json_problem(nested) is None
    assert json_problem(b"[" + b"9" * MAX_NUMBER_DIGITS + b"]") is None


def test_too_deep_too_long_a_number_too_long_a_string() -> None:
    deep = b"[" * (MAX_NESTING_DEPTH + 1) + b"]" * (MAX_NESTING_DEPTH + 1)
    assert json_problem(deep) == f"nested more than {MAX_NESTING_DEPTH} deep"
    assert json_problem(b"[" * 10_000) is not None  # never closed: still refused
    assert json_problem(b"{[" * 40 + b"1" + b"]}" * 40) is not None  # mixed kinds
    truncated = b"[" + b"{}," * 100  # shallow, unclosed: left to the parser
    assert json_problem(truncated) is None
    assert "digits" in (json_problem(b"[" + b"9" * (MAX_NUMBER_DIGITS + 1) + b"]") or "")
    long_string = b'["' + b"a" * (MAX_STRING_BYTES + 1) + b'"]'
    assert "string" in (json_problem(long_string) or "")


def test_brackets_and_digits_inside_strings_do_not_count() -> None:
    brackets = json.dumps({"Msg": "[" * 1000 + "{" * 1000, "ID": "9" * 500}).encode()
    assert json_problem(brackets) is None
    escaped = json.dumps({"Msg": '\\"[[[[' * 100}).encode()  # escaped quotes stay inside
    assert json_problem(escaped) is None


@pytest.mark.parametrize(
    ("hashrate", "power", "temperature"),
    [
        (-1e24 * 1e12, 3500.0, 60.0),
        (1e30, 3500.0, 60.0),
        (float("nan"), 3500.0, 60.0),
        (1e14, -1.0, 60.0),
        (1e14, float("inf"), 60.0),
        (1e14, 3500.0, 9999.0),
        (1e14, 3500.0, -100.0),
    ],
)
def test_implausible_readings(hashrate: float, power: float, temperature: float) -> None:
    assert implausible_reading(hashrate, power, temperature) is not None


def test_plausible_readings() -> None:
    assert implausible_reading(200e12, 3500.0, 75.0) is None
    assert implausible_reading(0.0, 0.0, None) is None
