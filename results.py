"""The typed result of a backup run, returned by the ``backup`` flow. Holds no secret."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["success", "partial", "failed"]


class StoredCopy(BaseModel):
    """One backup file on one destination."""

    destination: str = Field(description="Destination description (no secrets).")
    path: str | None = Field(default=None, description="Path of the backup file in the destination.")
    ok: bool = Field(description="True when the file was stored, verified and its manifest written.")
    error: str | None = Field(default=None, description="Why it failed, when it failed.")


class DatabaseResult(BaseModel):
    """The outcome for one database (or the server's globals)."""

    name: str = Field(description="Database name, or 'globals'.")
    kind: Literal["database", "globals"] = "database"
    status: Status
    plaintext_size: int = Field(default=0, description="Bytes of plain dump.")
    compressed_size: int = Field(default=0, description="Bytes after compression, before encryption.")
    stored_size: int = Field(default=0, description="Bytes stored in each destination.")
    sha256: str | None = Field(default=None, description="SHA-256 of the stored bytes.")
    seconds: float = Field(default=0.0, description="Duration of the dump and upload.")
    copies: list[StoredCopy] = Field(default_factory=list)
    error: str | None = None

    @property
    def path(self) -> str | None:
        """Path of the first stored copy (all copies share the same relative path)."""
        return next((c.path for c in self.copies if c.ok), None)


class BackupResult(BaseModel):
    """What a run of the ``backup`` flow did."""

    job: str
    run_id: str
    status: Status
    started_at: datetime
    finished_at: datetime
    databases: list[DatabaseResult]
    failed_destinations: list[str] = Field(
        default_factory=list, description="Destinations where at least one file failed."
    )

    @property
    def plaintext_size(self) -> int:
        """Total plain bytes dumped."""
        return sum(d.plaintext_size for d in self.databases)

    @property
    def stored_size(self) -> int:
        """Total bytes stored per destination."""
        return sum(d.stored_size for d in self.databases)


def overall_status(outcomes: list[bool]) -> Status:
    """``success`` when all succeeded, ``failed`` when none did (or there was nothing), else ``partial``."""
    if outcomes and all(outcomes):
        return "success"
    if any(outcomes):
        return "partial"
    return "failed"
