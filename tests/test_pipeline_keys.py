"""Keys: generation, text form (pdbk1: / hex), key ids; malformed text never echoed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prefect_db_backup.errors import ConfigurationError
from prefect_db_backup.pipeline.keys import generate_key, key_from_text, key_id, key_to_text


def test_generate_key_is_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(k) == 32 for k in keys)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_text_round_trip(key: bytes) -> None:
    text = key_to_text(key)
    assert re.fullmatch(r"pdbk1:[A-Za-z0-9_-]{43}", text)
    assert key_from_text(text) == key
    assert key_from_text(f"  {text}\n") == key
    assert key_from_text(key.hex()) == key
    assert key_from_text(key.hex().upper() + "\n") == key


def test_text_form_is_urlsafe_base64_without_padding() -> None:
    key = bytes([0xFB, 0xFF] * 16)
    text = key_to_text(key)
    assert text == "pdbk1:" + base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert "-" in text or "_" in text  # URL-safe alphabet, not + and /


def test_key_id_is_hmac_of_label() -> None:
    key = bytes(range(32))
    expected = hmac.new(key, b"prefect-db-backup key id v1", hashlib.sha256).hexdigest()[:16]
    assert key_id(key) == expected == "e72ba6887a155d84"
    assert key_id(generate_key()) != key_id(generate_key())


SECRET = key_to_text(bytes(range(100, 132)))
BODY = SECRET[len("pdbk1:") :]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "pdbk1:",
        SECRET[:-1],  # 42 characters
        SECRET + "A",  # 44 characters
        "pdbk2:" + BODY,  # unknown version
        "PDBK1:" + BODY,
        "pdbk1:" + BODY[:-1] + "=",  # padding / invalid character
        "pdbk1:" + BODY[:20] + "+" + BODY[21:],  # standard, not URL-safe, alphabet
        "pdbk1:" + BODY[:20] + " " + BODY[21:],  # inner whitespace
        BODY,  # missing prefix
        bytes(range(100, 132)).hex()[:-1],  # 63 hex characters
        bytes(range(100, 132)).hex() + "0",  # 65 hex characters
        bytes(range(100, 132)).hex()[:-1] + "g",
    ],
)
def test_malformed_text_names_field_and_is_not_echoed(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        key_from_text(text)
    message = str(info.value)
    assert message.startswith("key:")
    if len(text.strip()) > len("pdbk1:"):
        assert text.strip() not in message
    assert BODY[:12] not in message
    assert bytes(range(100, 132)).hex()[:12] not in message


def test_non_canonical_last_character_is_rejected() -> None:
    # 43 characters carry 258 bits; the last character's two spare bits must be zero.
    key = bytes(32)
    text = key_to_text(key)
    assert text.endswith("A")
    with pytest.raises(ConfigurationError):
        key_from_text(text[:-1] + "B")


@pytest.mark.parametrize("bad", [b"", b"x" * 16, b"x" * 31, b"x" * 33])
def test_wrong_length_keys_are_rejected(bad: bytes) -> None:
    for func in (key_to_text, key_id):
        with pytest.raises(ConfigurationError, match=r"^key:"):
            func(bad)
