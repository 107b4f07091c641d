"""Whatsminer API crypto and framing: md5-crypt, v2 token/sign/AES, v3 token and frames.

API v2 (port 4028, "WhatsMiner API V2.0.x" documentation; the same steps in
pyasic's ``rpc/btminer.py`` and the satoshi-anonymoto/whatsminer-api client):

    get_token         -> Msg {"time": 4 digits, "salt": 8 chars, "newsalt": 8 chars}
    key               = md5-crypt(admin_password, salt), the hash part after ``$1$salt$``
    sign              = md5-crypt(key + time, newsalt), the hash part
    aes key           = sha256(key).digest()   (32 bytes: AES-256)
    request           = {"enc": 1, "data": base64(aes256_ecb(json + NUL padding to 16))}
                        where json is {"cmd": ..., "token": sign, ...parameters}
    reply             = {"enc": base64(aes256_ecb(json reply, NUL padded))}

The documentation writes the plaintext abstractly as ``token,$sign|api_str``;
the public clients that work against real miners send the JSON object above,
and that is the shape followed here.

API v3 (port 4433, apidoc.whatsminer.com "TCP Data Framing" and "Token
Generation", as mirrored in the matroskin crate's docs): each message is a
4-byte little-endian length then that many bytes of JSON; a length of 0 is a
heartbeat.  A write command carries ``ts``, ``account`` and ``token``, where
token = base64(sha256(cmd + password + salt + str(ts)))[:8] and the salt comes
from ``get.device.info`` with ``param`` "salt".

md5-crypt is implemented here (Python's ``crypt`` module is gone in 3.13) and
checked against ``openssl passwd -1`` vectors in the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MAGIC = b"$1$"
FRAME_HEADER = struct.Struct("<I")


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _to64(value: int, count: int) -> str:
    out = []
    for _ in range(count):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def md5_crypt(password: str, salt: str) -> str:
    """The full md5-crypt string ``$1$<salt>$<hash>`` (salt cut to 8 characters)."""
    secret = password.encode()
    salt_bytes = salt.encode()[:8]
    alternate = _md5(secret + salt_bytes + secret)
    context = secret + _MAGIC + salt_bytes
    for remaining in range(len(secret), 0, -16):
        context += alternate[: min(16, remaining)]
    length = len(secret)
    while length:
        context += b"\x00" if length & 1 else secret[:1]
        length >>= 1
    digest = _md5(context)
    for round_number in range(1000):
        block = secret if round_number & 1 else digest
        if round_number % 3:
            block += salt_bytes
        if round_number % 7:
            block += secret
        block += digest if round_number & 1 else secret
        digest = _md5(block)
    encoded = "".join(
        _to64((digest[a] << 16) | (digest[b] << 8) | digest[c], 4)
        for a, b, c in ((0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5))
    )
    encoded += _to64(digest[11], 2)
    return f"$1${salt_bytes.decode()}${encoded}"


def md5_crypt_hash(password: str, salt: str) -> str:
    """Only the hash part of md5-crypt (what ``cut -f 4 -d '$'`` keeps)."""
    return md5_crypt(password, salt).rsplit("$", 1)[1]


@dataclass(frozen=True, slots=True)
class V2Token:
    """What a v2 client derives from one get_token reply: the sign and the AES key."""

    sign: str
    aes_key: bytes


def v2_key(password: str, salt: str) -> str:
    """The v2 ``key``: md5-crypt of the admin password with the token's salt."""
    return md5_crypt_hash(password, salt)


def v2_token(password: str, time: str, salt: str, newsalt: str) -> V2Token:
    """Derive sign and AES key from the admin password and one get_token reply."""
    key = v2_key(password, salt)
    return V2Token(sign=md5_crypt_hash(key + time, newsalt), aes_key=v2_aes_key(key))


def v2_aes_key(key: str) -> bytes:
    """The AES-256 key: sha256 of the md5-crypt key."""
    return hashlib.sha256(key.encode()).digest()


def v2_encrypt(aes_key: bytes, plaintext: str) -> str:
    """AES-256-ECB of the text padded with NULs to 16 bytes, base64 without newlines."""
    data = plaintext.encode()
    data += b"\x00" * (-len(data) % 16)
    encryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


def v2_decrypt(aes_key: bytes, encoded: str) -> str:
    """Undo v2_encrypt; ValueError when the text is not base64 of whole AES blocks or UTF-8."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if not data or len(data) % 16:
        raise ValueError(f"ciphertext of {len(data)} bytes is not whole AES blocks")
    decryptor = Cipher(algorithms.AES(aes_key), modes.ECB()).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    return plain.rstrip(b"\x00").decode()  # UnicodeDecodeError is a ValueError


def v3_token(command: str, password: str, salt: str, ts: int) -> tuple[str, bytes]:
    """The 8-character v3 token and the 32-byte key (for commands with encrypted parameters)."""
    digest = hashlib.sha256(f"{command}{password}{salt}{ts}".encode()).digest()
    return base64.b64encode(digest).decode()[:8], digest


def frame(payload: bytes) -> bytes:
    """One v3 message: 4-byte little-endian length, then the payload."""
    return FRAME_HEADER.pack(len(payload)) + payload
