"""Property-based fuzzing of every decoder: nothing a device sends raises but the documented error.

cgminer ``decode_reply`` (also Whatsminer v3 bodies) -> MalformedReply; Whatsminer v2
decrypted replies -> MalformedReply; the Braiins gRPC codec -> WireError; MQTT
messages -> MessageRejected; ``json_problem`` never raises at all.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.asic import bos_messages
from drivers.asic.cgminer_client import decode_reply
from drivers.asic.config import WhatsminerOptions
from drivers.asic.protowire import Message, WireError, decode
from drivers.asic.whatsminer import WhatsminerDriver
from drivers.asic.whatsminer_crypto import v2_encrypt, v2_token
from drivers.bounds import json_problem
from drivers.errors import MalformedReply
from drivers.telemetry.messages import Decoder, Limits, MessageRejected
from scheduler.core.model import Device, DeviceKind

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**80), max_value=10**80)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """Arbitrary JSON, deeply nested, with huge numbers or long strings, maybe cut short."""
    inner = json.dumps(draw(json_values)).encode()
    depth = draw(st.sampled_from([0, 1, 63, 64, 65, 1000, 20_000]))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    digits = draw(st.sampled_from([0, 64, 65, 4301, 6000]))
    if digits:
        inner = b"[" + b"9" * digits + b"," + inner + b"]"
    text = opener * depth + inner + closer * depth
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    return text


payloads = st.binary(max_size=2000) | hostile_json()


@FUZZ
@given(payloads)
def test_decode_reply_raises_only_malformed_reply(raw: bytes) -> None:
    try:
        reply = decode_reply(raw, "m1")
    except MalformedReply:
        return
    assert isinstance(reply, dict)


@FUZZ
@given(payloads)
def test_json_problem_never_raises(raw: bytes) -> None:
    assert json_problem(raw) is None or isinstance(json_problem(raw), str)


WHATSMINER = WhatsminerDriver({}, WhatsminerOptions(password="secret-pw"))
TOKEN = v2_token("secret-pw", "1234", "BQ5hoXV9", "jbzkfQls")
DEVICE = Device("wm", DeviceKind.ASIC, "M50", "whatsminer", "127.0.0.1", 4028, 1e14, 3300.0)


@FUZZ
@given(payloads, st.booleans())
def test_whatsminer_v2_decrypted_replies_raise_only_malformed_reply(
    raw: bytes, encrypt: bool
) -> None:
    encoded: Any = v2_encrypt(TOKEN.aes_key, raw.decode("utf-8", "replace")) if encrypt else raw
    try:
        reply = WHATSMINER._decrypt(DEVICE, "summary", TOKEN, encoded)
    except MalformedReply:
        return
    assert isinstance(reply, dict)


def _message_types() -> list[type[Message]]:
    return [
        value
        for value in vars(bos_messages).values()
        if isinstance(value, type) and issubclass(value, Message) and value is not Message
    ]


@FUZZ
@given(st.sampled_from(_message_types()), st.binary(max_size=600))
def test_protowire_decode_raises_only_wire_error(message_type: type[Message], raw: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(message_type, raw)


DECODER = Decoder(Limits())


@FUZZ
@given(payloads, st.sampled_from(["sample", "batch", "price", "event"]))
def test_mqtt_messages_raise_only_message_rejected(raw: bytes, kind: str) -> None:
    try:
        if kind == "sample":
            DECODER.sample("m1", raw, 1_700_000_000.0, 100.0)
        elif kind == "batch":
            DECODER.batch("site", raw, 1_700_000_000.0, 100.0)
        elif kind == "price":
            DECODER.price(raw, datetime(2024, 8, 20, tzinfo=UTC), 100.0)
        else:
            DECODER.event(raw, datetime(2024, 8, 20, tzinfo=UTC))
    except MessageRejected:
        pass
