"""The Braiins OS message tables against the reference protobuf encoder and our .proto subset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drivers.asic import bos_messages as bos
from drivers.asic.protowire import Message, WireError, decode, encode

ROOT = Path(__file__).parents[3]
WIRE = json.loads((ROOT / "tests/fixtures/braiins/wire.json").read_text())["cases"]
PROTO = (ROOT / "drivers/asic/proto/braiins_bos_v1_subset.proto").read_text()

# The same values as the cases in wire.json (encoded there by protobuf's SerializeToString).
EXPECTED: list[Message] = [
    bos.LoginRequest("root", "s3cret"),
    bos.LoginResponse("FvZarvVQLCtzNaM6", 3600),
    bos.LoginResponse(),
    bos.PauseMiningResponse(already_paused=True),
    bos.ResumeMiningResponse(already_mining=False),
    bos.SetPowerTargetRequest(bos.SaveAction.SAVE_AND_APPLY, bos.Power(2454)),
    bos.SetPowerTargetResponse(bos.Power(300000)),
    bos.GetTunerStateResponse(bos.TunerState.STABLE, bos.PowerTargetModeState(bos.Power(3068))),
    bos.GetTunerStateResponse(bos.TunerState.TUNING, bos.PowerTargetModeState()),
    bos.GetMinerDetailsResponse("lAOJ0RbI6axyOyGf", "bosminer", 90919, bos.MinerStatus.PAUSED),
    bos.GetConstraintsResponse(
        bos.TunerConstraints(bos.PowerConstraints(bos.Power(2760), bos.Power(771), bos.Power(6435)))
    ),
]


@pytest.mark.parametrize(("case", "message"), list(zip(WIRE, EXPECTED, strict=True)))
def test_encoding_matches_the_reference_encoder_both_ways(
    case: dict[str, str], message: Message
) -> None:
    assert type(message).__name__ == case["message"]
    assert encode(message).hex() == case["hex"]
    assert decode(type(message), bytes.fromhex(case["hex"])) == message


def test_fields_a_newer_firmware_adds_are_skipped() -> None:
    known = bytes.fromhex(WIRE[9]["hex"])
    identity = bytes.fromhex("1203") + b"\x0a\x01A"  # field 2 (miner_identity), a message
    sticker = bytes.fromhex("4a09") + bytes.fromhex("09") + b"\x00" * 8  # field 9, fixed64 inside
    fixed32 = bytes.fromhex("7d") + b"\x01\x02\x03\x04"  # field 15 as fixed32
    decoded = decode(bos.GetMinerDetailsResponse, identity + known + sticker + fixed32)
    assert decoded == EXPECTED[9]


@pytest.mark.parametrize(
    "broken",
    [b"\x08", b"\x0a\x05ab", b"\x08" + b"\xff" * 11, b"\x0b", b"\x00\x01", b"\x0a\x02\xff\xfe"],
    ids=["truncated-varint", "short-string", "long-varint", "group", "field-0", "not-utf8"],
)
def test_broken_bytes_raise_wire_error(broken: bytes) -> None:
    with pytest.raises(WireError):
        decode(bos.GetMinerDetailsResponse if broken != b"\x0a\x05ab" else bos.LoginRequest, broken)


def test_a_field_with_the_wrong_wire_type_is_an_error() -> None:
    with pytest.raises(WireError, match="status"):
        decode(bos.GetMinerDetailsResponse, bytes.fromhex("6201") + b"x")  # field 12 as bytes


def _proto_messages() -> dict[str, dict[str, int]]:
    messages: dict[str, dict[str, int]] = {}
    current: str | None = None
    depth = 0
    for line in PROTO.splitlines():
        line = line.split("//")[0].strip()
        if match := re.fullmatch(r"message (\w+) \{\}?", line):
            current, depth = match[1], 0 if line.endswith("}") else 1
            messages[current] = {}
            if depth == 0:
                current = None
            continue
        if current is None:
            continue
        depth += line.count("{") - line.count("}")
        if depth == 0:
            current = None
        elif match := re.fullmatch(r"(?:optional )?[\w.]+ (\w+) = (\d+);", line):
            messages[current][match[1]] = int(match[2])
    return messages


def test_the_tables_agree_with_the_proto_file() -> None:
    messages = _proto_messages()
    assert len(messages) == 18  # every message of the subset was parsed
    for name, fields in messages.items():
        table = getattr(bos, name, bos.Empty)
        assert {f.name: f.number for f in table.FIELDS} == fields, name
    services = re.findall(r"rpc (\w+)\((\w+)\) returns \((\w+)\);", PROTO)
    declared = {
        (m.name, getattr(bos, req, bos.Empty), getattr(bos, rep, bos.Empty))
        for m_name, req, rep in services
        for m in bos.METHODS
        if m.name == m_name
    }
    assert declared == {(m.name, m.request, m.reply) for m in bos.METHODS}
    for method in bos.METHODS:
        assert re.search(rf"service {method.service} \{{[^}}]*rpc {method.name}\(", PROTO)
        assert method.path == f"/braiins.bos.v1.{method.service}/{method.name}"
