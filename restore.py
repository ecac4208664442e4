"""Reading backups back: verify, decrypt, decompress, and restore into a database.

Used by ``prefect-db-backup restore`` and ``decrypt``, and by the tests that prove every backup restores.
"""

from __future__ import annotations

from typing import BinaryIO

from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.source import DumpUnit, Source
from prefect_db_backup.errors import ConfigurationError, IntegrityError
from prefect_db_backup.manifest import Manifest, manifest_path
from prefect_db_backup.pipeline.compression import CODECS, get_codec
from prefect_db_backup.pipeline.encryption import DecryptStage
from prefect_db_backup.pipeline.stages import HashStage, Stage, StageReader


class ExpectHashStage(HashStage):
    """Passes bytes through and, at the end, checks their size and SHA-256 against a manifest."""

    name = "expect-sha256"

    def __init__(self, size: int, sha256: str, what: str) -> None:
        super().__init__()
        self._expected = (size, sha256)
        self._what = what

    def finish(self) -> bytes:
        """Compare size and SHA-256 with the manifest.

        Raises:
            IntegrityError: If either differs.
        """
        size, digest = self._expected
        if (self.size, self.hexdigest) != self._expected:
            raise IntegrityError(
                f"{self._what} does not match its manifest: {self.size} bytes with SHA-256 "
                f"{self.hexdigest[:16]}..., expected {size} bytes with {digest[:16]}..."
            )
        return b""


def codec_from_path(path: str) -> str:
    """Guess the codec from a backup file name (``.zst``, ``.gz``, ``.br`` before an optional ``.enc``)."""
    name = path[:-4] if path.endswith(".enc") else path
    for codec in CODECS.values():
        if codec.extension and name.endswith(codec.extension):
            return codec.name
    return "none"


def reading_stages(
    *,
    encrypted: bool,
    key: bytes | None,
    codec: str,
    decompress: bool = True,
    expect: ExpectHashStage | None = None,
) -> list[Stage]:
    """Stages that turn stored bytes back into the plain dump.

    Raises:
        ConfigurationError: If the file is encrypted and no key was given.
    """
    stages: list[Stage] = [expect] if expect is not None else []
    if encrypted:
        if key is None:
            raise ConfigurationError("the backup is encrypted: a key is needed (field 'key')")
        stages.append(DecryptStage(key))
    if decompress:
        stages.append(get_codec(codec).decompressor())
    return stages


def read_manifest(destination: Destination, backup_path: str) -> Manifest:
    """Load the manifest of a backup.

    Raises:
        NotFoundError: If the backup has no manifest (it is not a committed backup).
        IntegrityError: If the manifest is unreadable.
    """
    path = manifest_path(backup_path)
    return Manifest.from_json(destination.read_bytes(path), path=path)


def open_plain(destination: Destination, manifest: Manifest, key: bytes | None) -> StageReader:
    """Open a committed backup as a stream of its plain dump, verified against its manifest on the way.

    The stored bytes' size and SHA-256 are checked when the stream ends, and every encrypted chunk is
    authenticated as it is read: a consumer that reads to the end without an exception got exactly the dump
    that was backed up.
    """
    expect = ExpectHashStage(manifest.stored_size, manifest.sha256, manifest.backup_path)
    stages = reading_stages(
        encrypted=manifest.encryption is not None, key=key, codec=manifest.compression.codec, expect=expect
    )
    return StageReader(destination.open_reader(manifest.backup_path), stages)


def unit_of(manifest: Manifest, source: Source) -> DumpUnit:
    """The dump unit a manifest describes.

    Server-wide objects are described by the manifest itself; a database as the source plans it, so that
    the source's restore options apply.
    """
    if manifest.unit_kind == "globals":
        return DumpUnit(
            name="globals",
            kind="globals",
            extension=plain_extension(manifest.backup_path),
            database=None,
            format=manifest.dump_format,
        )
    if manifest.database is None:
        raise IntegrityError(f"{manifest.backup_path}: the manifest names no database")
    return source.database_unit(manifest.database)


def plain_extension(path: str) -> str:
    """The plain dump's extension in a backup file name (``sql`` in ``..._stamp.sql.zst.enc``)."""
    name = path.rsplit("/", 1)[-1]
    name = name.removesuffix(".enc")
    codec = get_codec(codec_from_path(name))
    if codec.extension:
        name = name.removesuffix(codec.extension)
    return name.rsplit(".", 1)[-1]


def restore_backup(
    destination: Destination,
    backup_path: str,
    source: Source,
    *,
    key: bytes | None = None,
    target_database: str | None = None,
) -> Manifest:
    """Restore one committed backup into the source's server.

    Args:
        destination: Where the backup is stored.
        backup_path: Path of the backup file (not the manifest).
        source: The server to restore into.
        key: The encryption key, when the backup is encrypted.
        target_database: Restore into this (existing, empty) database instead of the original name.

    Returns:
        The backup's manifest.

    Raises:
        BackupError: If the manifest is missing or unreadable, the key is wrong, the stored bytes do not
            match the manifest, or the restore tool fails.
    """
    manifest = read_manifest(destination, backup_path)
    unit = unit_of(manifest, source)
    with open_plain(destination, manifest, key) as plain:
        source.restore(unit, _as_binary(plain), target_database=target_database)
    return manifest


def _as_binary(reader: StageReader) -> BinaryIO:
    return reader  # StageReader implements the read() subset of BinaryIO that restores use
