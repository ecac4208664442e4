"""Encryption keys: generation, text form and a non-secret identifier.

A key is 32 random bytes (AES-256). Its text form, which ``EncryptionProfile(key=...)`` accepts and
``prefect-db-backup keygen`` prints, is ``pdbk1:`` followed by the URL-safe base64 of the 32 bytes without
padding (43 characters); 64 hexadecimal characters are accepted as well. The key id, derived with HMAC, names
a key in files and messages without revealing it.

Nothing in this module ever puts key material into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

from prefect_db_backup.errors import ConfigurationError

KEY_SIZE = 32
"""Bytes in a key (256 bits)."""

KEY_TEXT_PREFIX = "pdbk1:"
"""Prefix of a key's text form; the digit is the text-form version."""

KEY_ID_SIZE = 8
"""Bytes in a key id (shown as 16 hexadecimal characters)."""

_KEY_ID_LABEL = b"prefect-db-backup key id v1"
_B64_TEXT = re.compile(r"[A-Za-z0-9_-]{43}")
_HEX_TEXT = re.compile(r"[0-9A-Fa-f]{64}")


def generate_key() -> bytes:
    """Return a new random 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_SIZE)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != KEY_SIZE:
        raise ConfigurationError(f"key: an encryption key must be exactly {KEY_SIZE} bytes")
    return bytes(key)


def key_to_text(key: bytes) -> str:
    """Return the text form of ``key``: ``pdbk1:`` + 43 URL-safe base64 characters.

    Raises:
        ConfigurationError: ``key`` is not 32 bytes (field ``key``).
    """
    raw = _check_key(key)
    return KEY_TEXT_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def key_from_text(text: str) -> bytes:
    """Parse a key from its text form (``pdbk1:...``) or from 64 hexadecimal characters.

    Surrounding whitespace (a trailing newline in a key file) is ignored.

    Raises:
        ConfigurationError: The text is not a valid key; the message names the field ``key`` and never
            repeats the text.
    """
    invalid = ConfigurationError(
        "key: not a valid encryption key",
        hint=f"expected '{KEY_TEXT_PREFIX}' followed by 43 URL-safe base64 characters (as printed by "
        "'prefect-db-backup keygen'), or 64 hexadecimal characters",
    )
    if not isinstance(text, str):
        raise invalid
    text = text.strip()
    if text.startswith(KEY_TEXT_PREFIX):
        body = text[len(KEY_TEXT_PREFIX) :]
        if not _B64_TEXT.fullmatch(body):
            raise invalid
        try:
            raw = base64.b64decode(body + "=", altchars=b"-_", validate=True)
        except binascii.Error:  # pragma: no cover - the regex admits only decodable text
            raise invalid from None
        # 43 characters carry 258 bits: reject texts whose 2 spare bits are set (a mistyped last character
        # that would otherwise decode silently to the same key as another text).
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != body:
            raise invalid
        return raw
    if _HEX_TEXT.fullmatch(text):
        return bytes.fromhex(text)
    raise invalid


def key_id_bytes(key: bytes) -> bytes:
    """Return the 8 raw bytes of the key id: the first 8 bytes of HMAC-SHA256(key, label).

    Raises:
        ConfigurationError: ``key`` is not 32 bytes.
    """
    return hmac.new(_check_key(key), _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_SIZE]


def key_id(key: bytes) -> str:
    """Return the key's non-secret identifier: 16 lowercase hex characters.

    It is the first 16 hex characters of HMAC-SHA256(key, b"prefect-db-backup key id v1"). It tells which
    key encrypted a file; since keys are 256 random bits, publishing it reveals nothing usable about the key.

    Raises:
        ConfigurationError: ``key`` is not 32 bytes.
    """
    return key_id_bytes(key).hex()
