"""What a destination holds for one job: committed backups, unreadable manifests and leftovers.

Only the manifest proves that a file is a committed backup of a job: a backup counts when
``<path>.meta.json`` parses, names the job, names this very path, and the data file exists. Nothing here
trusts file names alone or storage timestamps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prefect_db_backup.adapters.destination import Destination, ObjectInfo
from prefect_db_backup.errors import BackupError
from prefect_db_backup.manifest import Manifest, backup_path_of, is_manifest_path


@dataclass(frozen=True)
class StoredBackup:
    """A committed backup: its manifest and the data file's listing entry."""

    manifest: Manifest
    info: ObjectInfo

    @property
    def path(self) -> str:
        """Path of the backup file relative to the destination root."""
        return self.info.path


@dataclass
class Inventory:
    """A job's files on one destination, sorted into what can and cannot be trusted.

    Attributes:
        committed: Backups whose manifest proves they belong to the job, oldest first.
        unreadable: Manifests that could not be read or do not match their file, with the reason. Their
            backups are never deleted.
        leftovers: Files in the job's folder that no manifest claims (uncommitted or foreign files).
    """

    committed: list[StoredBackup] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    leftovers: list[ObjectInfo] = field(default_factory=list)


def job_prefix(job_name: str) -> str:
    """The folder (prefix) holding a job's backups."""
    return f"{job_name}/"


def take_inventory(destination: Destination, job_name: str) -> Inventory:
    """List a job's folder completely and classify every file by its manifest.

    Raises:
        BackupError: If the listing itself fails (retention must then do nothing).
    """
    prefix = job_prefix(job_name)
    files = {info.path: info for info in destination.list(prefix)}
    inventory = Inventory()
    claimed: set[str] = set()
    for path in sorted(p for p in files if is_manifest_path(p)):
        data_path = backup_path_of(path)
        claimed.add(path)
        try:
            manifest = Manifest.from_json(destination.read_bytes(path), path=path)
        except BackupError as exc:
            inventory.unreadable.append((path, str(exc)))
            claimed.add(data_path)
            continue
        problem = _mismatch(manifest, job_name, data_path, files)
        if problem:
            inventory.unreadable.append((path, problem))
            claimed.add(data_path)
            continue
        claimed.add(data_path)
        inventory.committed.append(StoredBackup(manifest=manifest, info=files[data_path]))
    inventory.committed.sort(key=lambda b: (b.manifest.started_at, b.path))
    inventory.leftovers = [info for path, info in sorted(files.items()) if path not in claimed]
    return inventory


def _mismatch(manifest: Manifest, job_name: str, data_path: str, files: dict[str, ObjectInfo]) -> str | None:
    if manifest.job_name != job_name:
        return f"manifest names job {manifest.job_name!r}, not {job_name!r}"
    if manifest.backup_path != data_path:
        return f"manifest describes {manifest.backup_path!r}, not {data_path!r}"
    info = files.get(data_path)
    if info is None:
        return "the backup file it describes is missing"
    if info.size != manifest.stored_size:
        return f"the backup file has {info.size} bytes, the manifest says {manifest.stored_size}"
    return None


def committed_paths(backups: Iterable[StoredBackup]) -> list[str]:
    """Paths of committed backups, in the given order."""
    return [b.path for b in backups]
