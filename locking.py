"""Locking a backup: recorded in its manifest, and at the storage level where the storage can."""

from __future__ import annotations

from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.errors import ConfigurationError
from prefect_db_backup.manifest import manifest_path
from prefect_db_backup.restore import read_manifest


def set_locked(destination: Destination, job_name: str, backup_path: str, locked: bool) -> bool:
    """Lock or unlock one committed backup of a job.

    The manifest is rewritten with ``locked`` set (retention never deletes a locked backup); where the
    destination supports it, the data file is also protected by the storage itself (S3 legal hold).

    Returns:
        True if the storage now enforces the state too, False if only the manifest records it.

    Raises:
        NotFoundError: If the backup has no manifest.
        ConfigurationError: If the manifest belongs to another job.
    """
    manifest = read_manifest(destination, backup_path)
    if manifest.job_name != job_name or manifest.backup_path != backup_path:
        raise ConfigurationError(f"{backup_path} is not a backup of job {job_name!r}")
    storage = False
    if not locked:
        storage = destination.set_storage_lock(backup_path, False)
    updated = manifest.model_copy(update={"locked": locked})
    destination.write_bytes(manifest_path(backup_path), updated.to_json(), overwrite=True)
    if locked:
        storage = destination.set_storage_lock(backup_path, True)
    return storage
