"""The backup job block: what to back up, where to, and how."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from prefect.client.schemas.objects import BlockDocument
from prefect_db_backup.blocks.catalog import DestinationBlock, SourceBlock
from prefect_db_backup.blocks.encryption import EncryptionProfile
from prefect_db_backup.blocks.retention import RetentionPolicy
from prefect_db_backup.naming import validate_name
from prefect_db_backup.pipeline.compression import get_codec, validate_level
from pydantic import Field, HttpUrl, field_validator, model_validator

Compression = Literal["none", "gzip", "brotli", "zstd"]


class BackupJob(Block):
    """A database backup job: a source, one or more destinations, compression, encryption, retention.

    Run it with the ``backup`` flow (``backup_database("JOB_NAME")``), a deployment, or
    ``prefect-db-backup run JOB_NAME``. Backups land at
    ``<job>/<job>_<database>_<UTC timestamp>.<ext>[.gz|.br|.zst][.enc]`` in every destination, each with a
    ``.meta.json`` manifest written last.

    Attributes:
        name: Job name; the folder and file-name prefix of its backups.
        source: The database server or file to back up.
        destinations: Where backups are stored; the dump is read once and reaches every destination.
        compression: Codec applied before encryption.
        compression_level: Codec level; None uses the codec's default.
        encryption: Key that encrypts backups; None stores them unencrypted.
        retention: Which backups to keep; None keeps every backup.
        tags: Extra tags for the job's task runs (concurrency limits, filtering).
        verify: After upload, ``checksum`` reads every stored file back and compares its SHA-256;
            ``size`` compares sizes only.

    Example:
        Load a saved job and run it:
        ```python
        from prefect_db_backup.blocks import BackupJob
        from prefect_db_backup.flows.backup import backup_database

        job = BackupJob.load("BLOCK_NAME")
        result = backup_database(job)
        ```
    """

    _block_type_name = "DB Backup Job"
    _block_type_slug = "db-backup-job"
    _description = "A database backup job: source, destinations, compression, encryption and retention."
    _documentation_url = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#readme")

    name: str = Field(description="Job name; the folder and file-name prefix of its backups.")
    source: SourceBlock = Field(description="The database server or file to back up.")
    destinations: list[DestinationBlock] = Field(
        min_length=1, description="Where backups are stored; the dump is read once and reaches every one."
    )
    compression: Compression = Field(default="zstd", description="Codec applied before encryption.")
    compression_level: int | None = Field(
        default=None, description="Codec level; empty uses the codec's default."
    )
    encryption: EncryptionProfile | None = Field(
        default=None, description="Key that encrypts backups; empty stores them unencrypted."
    )
    retention: RetentionPolicy | None = Field(
        default=None, description="Which backups to keep; empty keeps every backup."
    )
    tags: list[str] = Field(default_factory=list, description="Extra tags for the job's task runs.")
    verify: Literal["checksum", "size"] = Field(
        default="checksum",
        description="After upload, 'checksum' reads stored files back and compares SHA-256; 'size' "
        "compares sizes only.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        try:
            return validate_name(value, field="name")
        except Exception as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _valid_level(self) -> BackupJob:
        if self.compression_level is not None:
            try:
                validate_level(get_codec(self.compression), self.compression_level)
            except Exception as exc:
                raise ValueError(str(exc)) from None
        return self

    @classmethod
    def _from_block_document(cls, block_document: BlockDocument) -> BackupJob:
        """Load a saved job, telling pydantic which block type each nested saved block is.

        Prefect merges a nested saved block's data into its parent without its type slug, so a union field
        (``source``) would take the first member whose fields happen to validate (a ``PostgresSource``
        with defaults for an SQLite source). The references carry the type: put it back first.
        """
        for name, reference in (block_document.block_document_references or {}).items():
            nested = block_document.data.get(name)
            block_type = (reference.get("block_document") or {}).get("block_type")
            slug = getattr(block_type, "slug", None)
            if slug is None and isinstance(block_type, dict):
                slug = block_type.get("slug")
            if slug and isinstance(nested, dict):
                nested.setdefault("block_type_slug", slug)
        return super()._from_block_document(block_document)

    def concurrency_tags(self) -> list[str]:
        """Tags that Prefect tag concurrency limits match: ``db-backup`` and ``db-backup-<source>``.

        ``<source>`` is the source block's saved name, or the job name when the source was never saved.
        """
        source_name = getattr(self.source, "_block_document_name", None) or self.name
        return ["db-backup", f"db-backup-{source_name}", *self.tags]
