"""Step 3: commit. Verify what each destination stored, then write the manifest last.

A backup exists only once its manifest exists. A file that fails verification, or whose manifest cannot
be written, is deleted again (it was never a backup) and the destination is reported as failed.
"""

from __future__ import annotations

import contextlib
import hashlib

from prefect import get_run_logger, task
from prefect_db_backup import __version__
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.errors import BackupError, IntegrityError
from prefect_db_backup.manifest import CompressionInfo, EncryptionInfo, Manifest, manifest_path
from prefect_db_backup.tasks.dump import DumpOutcome
from prefect_db_backup.tasks.options import STEP_OPTIONS
from prefect_db_backup.tasks.plan import BackupPlan


def verify_stored(destination: Destination, path: str, size: int, sha256: str, mode: str) -> None:
    """Check a stored file against what was written.

    Args:
        destination: Where it was stored.
        path: Its path.
        size: Bytes written.
        sha256: SHA-256 of the bytes written.
        mode: ``size`` compares sizes; ``checksum`` also reads it back and compares SHA-256.

    Raises:
        IntegrityError: If the stored file differs.
    """
    info = destination.stat(path)
    if info.size != size:
        raise IntegrityError(f"{path} on {destination.describe()} has {info.size} bytes, {size} were written")
    if mode != "checksum":
        return
    digest = hashlib.sha256()
    with destination.open_reader(path) as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise IntegrityError(f"{path} on {destination.describe()} reads back with a different SHA-256")


def build_manifest(
    plan: BackupPlan, outcome: DumpOutcome, destination_kind: str, flow_run_id: str | None
) -> Manifest:
    """The manifest of one backup file (identical on every destination but for ``destination_kind``)."""
    encryption = None
    if outcome.encryption is not None:
        encryption = EncryptionInfo(
            algorithm=str(outcome.encryption.get("algorithm", "AES-256-GCM")),
            key_id=str(outcome.encryption.get("key_id", plan.key_id)),
            format_version=int(outcome.encryption.get("format_version", 1)),
            chunk_size=int(outcome.encryption.get("chunk_size", plan.chunk_size)),
        )
    level = outcome.compression.get("level")
    return Manifest(
        tool_version=__version__,
        backup_path=outcome.path,
        job_name=plan.job_name,
        job_id=plan.job_id,
        run_id=plan.run_id,
        flow_run_id=flow_run_id,
        source_kind=plan.source_kind,
        source_name=plan.source_name,
        source=plan.source_description,
        unit_kind=outcome.unit.kind,
        database=outcome.unit.database,
        dump_format=outcome.unit.format,
        engine=plan.source_info.engine,
        server_version=plan.source_info.server_version,
        client_version=plan.source_info.client_version,
        started_at=outcome.started_at,
        finished_at=outcome.finished_at,
        compression=CompressionInfo(codec=plan.codec.name, level=level if isinstance(level, int) else None),
        encryption=encryption,
        plaintext_size=outcome.plaintext_size,
        stored_size=outcome.stored_size,
        sha256=outcome.sha256,
        destination_kind=destination_kind,
        locked=plan.lock,
    )


@task(name="upload", task_run_name="commit-{outcome.unit.name}", **STEP_OPTIONS)
def upload(plan: BackupPlan, outcome: DumpOutcome, flow_run_id: str | None = None) -> DumpOutcome:
    """Verify each stored copy and write its manifest; undo copies that cannot be committed.

    Returns:
        The outcome with ``committed`` narrowed to the copies that are now complete backups and ``errors``
        extended with the others.
    """
    logger = get_run_logger()
    for target in plan.targets:
        if target.key not in outcome.committed:
            continue
        destination = target.adapter
        try:
            verify_stored(destination, outcome.path, outcome.stored_size, outcome.sha256, plan.verify)
            manifest = build_manifest(plan, outcome, target.kind, flow_run_id)
            destination.write_bytes(manifest_path(outcome.path), manifest.to_json())
            if plan.lock and destination.set_storage_lock(outcome.path, True):
                logger.info("Locked %s at the storage level on %s", outcome.path, target.description)
        except BackupError as exc:
            logger.error("Commit of %s on %s failed: %s", outcome.path, target.description, exc)
            outcome.errors[target.key] = str(exc)
            del outcome.committed[target.key]
            with contextlib.suppress(BackupError):
                destination.delete(outcome.path)
            continue
        logger.info("Committed %s on %s (%s verified)", outcome.path, target.description, plan.verify)
    return outcome
