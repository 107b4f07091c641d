"""A small proto3 wire codec for table-described messages (varints, strings, nested messages).

Why not the ``protobuf`` runtime and generated stubs: the Braiins OS subset
wattmux speaks is a dozen messages of a few scalar fields each, so a
table-driven codec (about a hundred lines) avoids a code generator at build
time and untyped generated modules under mypy --strict.  The encoding follows
the protobuf wire format: a key is ``(field_number << 3) | wire_type`` as a
varint; wire type 0 is a varint (uint32, uint64, bool, enum), 2 is
length-delimited (string, nested message; a repeated message field is one
entry per occurrence), 1 is a fixed 64-bit value (a double where the table
says so) and 5 a fixed 32-bit one (skipped when unknown).  Scalars equal to their default are not
written (proto3); a nested message is written whenever it is set, even empty
(that is how a oneof member shows it is present).  Unknown fields are
skipped, so newer firmware that adds fields still decodes.

Tests hold the codec to byte strings produced by the reference protobuf
implementation (tests/fixtures/braiins/wire.json).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from drivers.bounds import MAX_GRPC_MESSAGE_BYTES, MAX_PROTO_NESTING_DEPTH

MAX_REPEATED = 1024  # entries of one repeated field (boards, fans, pools: a handful each)


class WireError(ValueError):
    """Bytes that are not a valid encoding of the expected message."""


class Kind(enum.Enum):
    """How a field's value is carried on the wire."""

    VARINT = 0  # uint32, uint64, bool, enum (kept as int: proto3 enums are open)
    STRING = 2
    MESSAGE = 3  # length-delimited, decoded with the field's message type
    DOUBLE = 1  # fixed 64-bit IEEE 754 (hash rates, temperatures, voltages)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message table: number, attribute name, kind, nested type."""

    number: int
    name: str
    kind: Kind
    message: type[Message] | None = None
    repeated: bool = False
    """A repeated message field: the attribute holds a tuple of messages."""


class Message:
    """Base of table-described messages: subclasses are dataclasses with a FIELDS table."""

    FIELDS: ClassVar[tuple[Field, ...]] = ()


M = TypeVar("M", bound=Message)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int32/int64 are ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(message: Message) -> bytes:
    """The wire bytes of ``message`` (fields in table order, defaults left out)."""
    out = bytearray()
    for field in message.FIELDS:
        value = getattr(message, field.name)
        if field.repeated:
            for item in value:
                data = encode(item)
                out += _varint(field.number << 3 | 2) + _varint(len(data)) + data
        elif field.kind is Kind.DOUBLE:
            if value:
                out += _varint(field.number << 3 | 1) + struct.pack("<d", float(value))
        elif field.kind is Kind.VARINT:
            number = int(value)
            if number:
                out += _varint(field.number << 3) + _varint(number)
        elif field.kind is Kind.STRING:
            if value:
                data = str(value).encode()
                out += _varint(field.number << 3 | 2) + _varint(len(data)) + data
        elif value is not None:
            data = encode(value)
            out += _varint(field.number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise WireError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than ten bytes")


def decode(message_type: type[M], data: bytes, _depth: int = 0) -> M:
    """Decode ``data`` into ``message_type``; unknown fields are skipped; WireError when broken.

    Bounded (drivers/bounds.py): at most MAX_GRPC_MESSAGE_BYTES, nested at most
    MAX_PROTO_NESTING_DEPTH messages deep.
    """
    if len(data) > MAX_GRPC_MESSAGE_BYTES:
        raise WireError(f"{len(data)} bytes, over the {MAX_GRPC_MESSAGE_BYTES} byte limit")
    if _depth > MAX_PROTO_NESTING_DEPTH:
        raise WireError(f"nested over {MAX_PROTO_NESTING_DEPTH} messages deep")
    by_number = {field.number: field for field in message_type.FIELDS}
    values: dict[str, Any] = {}
    at = 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == 0:
            value, at = _read_varint(data, at)
            payload: bytes | int = value
        elif wire_type == 2:
            length, at = _read_varint(data, at)
            if at + length > len(data):
                raise WireError(f"field {number}: {length} bytes announced, fewer left")
            payload, at = data[at : at + length], at + length
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if at + width > len(data):
                raise WireError(f"field {number}: truncated fixed-width value")
            known = by_number.get(number)
            if wire_type == 1 and known is not None and known.kind is Kind.DOUBLE:
                values[known.name] = struct.unpack("<d", data[at : at + 8])[0]
            at += width
            continue
        else:
            raise WireError(f"field {number}: unsupported wire type {wire_type}")
        field = by_number.get(number)
        if field is None:
            continue
        expected = {Kind.VARINT: 0, Kind.DOUBLE: 1}.get(field.kind, 2)
        if wire_type != expected:
            raise WireError(f"{message_type.__name__}.{field.name}: wire type {wire_type}")
        if field.kind is Kind.VARINT:
            values[field.name] = payload
        elif field.kind is Kind.STRING:
            assert isinstance(payload, bytes)
            try:
                values[field.name] = payload.decode()
            except UnicodeDecodeError as exc:
                raise WireError(f"{message_type.__name__}.{field.name}: not UTF-8") from exc
        else:
            assert isinstance(payload, bytes) and field.message is not None
            decoded = decode(field.message, payload, _depth + 1)
            if field.repeated:
                if len(values.get(field.name, ())) >= MAX_REPEATED:
                    raise WireError(f"{message_type.__name__}.{field.name}: over {MAX_REPEATED}")
                values[field.name] = (*values.get(field.name, ()), decoded)
            else:
                values[field.name] = decoded
    return message_type(**values)
