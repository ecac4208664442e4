"""The manifest: a JSON record written beside each backup, last, so that a backup exists only once complete.

A backup file ``<job>/<job>_<database>_<timestamp>.<ext>[.gz|.br|.zst][.enc]`` is *committed* when
``<that path>.meta.json`` exists and parses as a :class:`Manifest`. Retention, listing and restore trust
only committed backups; a data file without its manifest is an uncommitted leftover.

The manifest never holds a secret: encryption is described by algorithm and key id only.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from prefect_db_backup.errors import IntegrityError
from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SUFFIX = ".meta.json"
MANIFEST_FORMAT_VERSION = 1


class CompressionInfo(BaseModel):
    """How the plain dump was compressed."""

    model_config = ConfigDict(frozen=True)

    codec: str = Field(description="Codec name: none, gzip, brotli or zstd.")
    level: int | None = Field(default=None, description="Codec level, None for no compression.")


class EncryptionInfo(BaseModel):
    """How the compressed dump was encrypted (never the key itself)."""

    model_config = ConfigDict(frozen=True)

    algorithm: str = Field(description="Encryption algorithm, AES-256-GCM.")
    key_id: str = Field(description="Non-secret identifier of the key.")
    format_version: int = Field(description="Version of the encrypted file format (docs/format.md).")
    chunk_size: int = Field(description="Plaintext bytes per authenticated chunk.")


class Manifest(BaseModel):
    """Everything known about one stored backup file.

    Attributes mirror the JSON document written to ``<backup>.meta.json``.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    format_version: int = MANIFEST_FORMAT_VERSION
    tool_version: str
    backup_path: str = Field(description="Path of the backup file relative to the destination root.")
    job_name: str
    job_id: str | None = None
    run_id: str = Field(description="Unique id shared by every file of one backup run.")
    flow_run_id: str | None = None
    source_kind: str
    source_name: str | None = None
    source: str = Field(description="Source description without secrets.")
    unit_kind: Literal["database", "globals"] = "database"
    database: str | None
    dump_format: str
    engine: str
    server_version: str
    client_version: str | None = None
    started_at: datetime
    finished_at: datetime
    compression: CompressionInfo
    encryption: EncryptionInfo | None = None
    plaintext_size: int
    stored_size: int
    sha256: str
    destination_kind: str
    locked: bool = False

    def to_json(self) -> bytes:
        """Serialize to indented UTF-8 JSON."""
        return (self.model_dump_json(indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, path: str = "manifest") -> Manifest:
        """Parse a manifest.

        Raises:
            IntegrityError: If the document is not valid JSON or not a valid manifest, naming ``path``.
        """
        try:
            return cls.model_validate(json.loads(data))
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"{path} is not a valid backup manifest: {exc}") from exc


def manifest_path(backup_path: str) -> str:
    """Path of the manifest of the backup file at ``backup_path``."""
    return backup_path + MANIFEST_SUFFIX


def is_manifest_path(path: str) -> bool:
    """Tell whether ``path`` names a manifest."""
    return path.endswith(MANIFEST_SUFFIX)


def backup_path_of(manifest_file: str) -> str:
    """Path of the backup file a manifest describes."""
    return manifest_file[: -len(MANIFEST_SUFFIX)]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def new_run_stamp(now: datetime) -> str:
    """A file-name timestamp unique even for two runs in the same second.

    The form is ``YYYYMMDDTHHMMSSZ-xxxxxx``: UTC time to the second, then 6 random hex digits. Commits
    never overwrite, so even a collision could not replace an existing backup.
    """
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_file_path(
    job: str, unit_name: str, stamp: str, extension: str, codec_ext: str, encrypted: bool
) -> str:
    """Build ``<job>/<job>_<unit>_<stamp>.<ext>[.gz|.br|.zst][.enc]``."""
    suffix = f".{extension}{codec_ext}{'.enc' if encrypted else ''}"
    return f"{job}/{job}_{unit_name}_{stamp}{suffix}"


def summarize(manifest: Manifest) -> dict[str, Any]:
    """A short, secret-free summary of a manifest for tables and logs."""
    return {
        "path": manifest.backup_path,
        "database": manifest.database or manifest.unit_kind,
        "started_at": manifest.started_at.isoformat(),
        "stored_size": manifest.stored_size,
        "locked": manifest.locked,
    }
