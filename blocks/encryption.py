"""The encryption key block."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect_db_backup.pipeline.keys import generate_key, key_from_text, key_id, key_to_text
from pydantic import Field, HttpUrl, SecretStr, field_validator

DEFAULT_CHUNK_SIZE = 1 << 20


class EncryptionProfile(Block):
    """A 256-bit key that encrypts backups with AES-256-GCM (see docs/format.md).

    The key is held as a secret: the Prefect server stores it encrypted and the UI masks it. Backups record
    only the key's non-secret id, so a file names the key it needs. Keep a copy of the key outside Prefect:
    without it no backup encrypted with it can be restored.

    Attributes:
        key: The key in text form (``pdbk1:...``, as printed by ``prefect-db-backup keygen``).
        chunk_size: Plaintext bytes per authenticated chunk.

    Example:
        Load a saved key and show its id:
        ```python
        from prefect_db_backup.blocks import EncryptionProfile

        profile = EncryptionProfile.load("BLOCK_NAME")
        print(profile.key_id)
        ```
    """

    _block_type_name = "DB Backup Encryption Key"
    _block_type_slug = "db-backup-encryption-key"
    _description = "A 256-bit AES-GCM key for encrypting database backups; stored as a secret."
    _documentation_url = HttpUrl(
        "https://github.com/prefect-db-backup/prefect-db-backup/blob/main/docs/format.md"
    )

    key: SecretStr = Field(
        description="The key in text form (pdbk1:...), as printed by 'prefect-db-backup keygen'."
    )
    chunk_size: int = Field(
        default=DEFAULT_CHUNK_SIZE,
        ge=4096,
        le=64 << 20,
        description="Plaintext bytes per authenticated chunk of the encrypted format.",
    )

    @field_validator("key")
    @classmethod
    def _valid_key(cls, value: SecretStr) -> SecretStr:
        try:
            key_from_text(value.get_secret_value())
        except Exception as exc:  # the message names the field and never echoes the key
            raise ValueError(str(exc)) from None
        return value

    @classmethod
    def generate(cls, **kwargs: Any) -> EncryptionProfile:
        """Create a profile holding a new random 256-bit key."""
        return cls(key=SecretStr(key_to_text(generate_key())), **kwargs)

    def key_bytes(self) -> bytes:
        """The raw 32-byte key. Handle with care: never log it."""
        return key_from_text(self.key.get_secret_value())

    @property
    def key_id(self) -> str:
        """The key's non-secret identifier, as recorded in manifests and file headers."""
        return key_id(self.key_bytes())
