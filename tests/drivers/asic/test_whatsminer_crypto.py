"""Known answers for Whatsminer's md5-crypt, v2 sign/AES and v3 token and framing."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from drivers.asic.whatsminer_crypto import (
    frame,
    md5_crypt,
    md5_crypt_hash,
    v2_aes_key,
    v2_decrypt,
    v2_encrypt,
    v2_key,
    v2_token,
    v3_token,
)

# Produced with `openssl passwd -1 -salt SALT PASSWORD` (OpenSSL 3).
OPENSSL_VECTORS = [
    ("admin", "BQ5hoXV9", "$1$BQ5hoXV9$RxmaDUO33TS7O26yeMHZ81"),
    ("", "abc", "$1$abc$Or2rbeUYTvt12aiVzMuS/."),
    (
        "a_very_long_password_that_exceeds_sixteen_chars",
        "12345678",
        "$1$12345678$QFWewG73fPShC2cWsqtmi0",
    ),
]


@pytest.mark.parametrize(("password", "salt", "expected"), OPENSSL_VECTORS)
def test_md5_crypt_matches_openssl(password: str, salt: str, expected: str) -> None:
    assert md5_crypt(password, salt) == expected
    assert md5_crypt_hash(password, salt) == expected.rsplit("$", 1)[1]


def test_md5_crypt_cuts_the_salt_to_eight_characters() -> None:
    assert md5_crypt("admin", "BQ5hoXV9EXTRA") == OPENSSL_VECTORS[0][2]


def test_v2_token_chains_two_md5_crypts_and_hashes_the_key_for_aes() -> None:
    token = v2_token("admin", "9986", "BQ5hoXV9", "ZAVm8Mm5")
    key = "RxmaDUO33TS7O26yeMHZ81"
    assert v2_key("admin", "BQ5hoXV9") == key
    assert token.sign == md5_crypt_hash(key + "9986", "ZAVm8Mm5")
    assert token.aes_key == hashlib.sha256(key.encode()).digest() == v2_aes_key(key)
    assert len(token.aes_key) == 32


def test_v2_encryption_pads_with_nuls_to_whole_blocks_and_round_trips() -> None:
    key = v2_aes_key("RxmaDUO33TS7O26yeMHZ81")
    text = json.dumps({"cmd": "power_off", "token": "x", "respbefore": "true"})
    encoded = v2_encrypt(key, text)
    raw = base64.b64decode(encoded)
    assert len(raw) % 16 == 0 and len(raw) >= len(text) and "\n" not in encoded
    assert v2_decrypt(key, encoded) == text
    assert v2_encrypt(key, text) == encoded  # ECB: deterministic
    assert v2_encrypt(key, "x" * 16) != v2_encrypt(v2_aes_key("other"), "x" * 16)


def test_v2_decrypt_refuses_what_is_not_ciphertext() -> None:
    key = v2_aes_key("k")
    for bad in ("not base64!", base64.b64encode(b"short").decode(), ""):
        with pytest.raises(ValueError):
            v2_decrypt(key, bad)


def test_v3_token_is_the_first_eight_base64_characters_of_sha256() -> None:
    token, key = v3_token("set.miner.pools", "abcdefg", "QbVy1Ou3", 1692685512)
    digest = hashlib.sha256(b"set.miner.poolsabcdefgQbVy1Ou31692685512").digest()
    assert key == digest and token == base64.b64encode(digest).decode()[:8]
    assert len(token) == 8


def test_v3_frames_are_little_endian_length_prefixed() -> None:
    assert frame(b'{"cmd":"x"}') == b'\x0b\x00\x00\x00{"cmd":"x"}'
    assert frame(b"") == b"\x00\x00\x00\x00"  # the heartbeat
