"""Step 1: resolve the job's blocks, test every connection, discover databases. Fails fast."""

from __future__ import annotations

import uuid

from prefect import get_run_logger, task
from prefect.context import get_run_context
from prefect_db_backup.adapters.retry import RetryingDestination
from prefect_db_backup.blocks.job import BackupJob
from prefect_db_backup.errors import BackupError, ConfigurationError
from prefect_db_backup.manifest import new_run_stamp, utc_now
from prefect_db_backup.naming import validate_name
from prefect_db_backup.pipeline.compression import get_codec
from prefect_db_backup.tasks.options import STEP_OPTIONS
from prefect_db_backup.tasks.plan import BackupPlan, Target


def load_job(job: str | BackupJob) -> BackupJob:
    """Return ``job`` itself, or load the saved :class:`BackupJob` of that name.

    Raises:
        ConfigurationError: If no job of that name is saved.
    """
    if isinstance(job, BackupJob):
        return job
    try:
        return BackupJob.load(job)
    except ValueError as exc:
        raise ConfigurationError(
            f"no saved backup job named {job!r}", hint="create it with BackupJob(...).save(NAME)"
        ) from exc


def block_name(block: object) -> str | None:
    """The saved name of a block, if it was saved or loaded."""
    return getattr(block, "_block_document_name", None)


def block_id(block: object) -> str | None:
    """The saved document id of a block, if any."""
    value = getattr(block, "_block_document_id", None)
    return str(value) if value else None


@task(name="initialize", **STEP_OPTIONS)
def initialize(job: BackupJob, lock: bool = False) -> BackupPlan:
    """Resolve adapters, test the source and every destination, and list what to dump.

    Args:
        job: The job to run.
        lock: Mark the backups of this run as locked (retention never deletes them).

    Returns:
        The plan the next steps follow.

    Raises:
        BackupError: If the source or any destination fails its connection test, or a named database does
            not exist; nothing has been written anywhere yet.
    """
    logger = get_run_logger()
    source = job.source.get_adapter()
    info = source.test_connection()
    logger.info(
        "Source %s: %s %s (client %s)",
        source.describe(),
        info.engine,
        info.server_version,
        info.client_version,
    )
    databases = source.resolve_databases(
        getattr(job.source, "databases", []) or [], getattr(job.source, "exclude_databases", []) or []
    )
    for database in databases:
        validate_name(database, field=f"database name {database!r}")
    units = source.dump_units(databases)
    if not units:
        raise ConfigurationError(f"{source.describe()} has no database to back up")

    targets: list[Target] = []
    failures: list[str] = []
    for index, block in enumerate(job.destinations, start=1):
        adapter = block.get_adapter()
        target = Target(
            key=f"d{index}",
            adapter=RetryingDestination(adapter),
            description=block.describe(),
            kind=adapter.kind,
        )
        try:
            target.adapter.test_connection()
        except BackupError as exc:
            failures.append(f"{target.description}: {exc}")
            continue
        targets.append(target)
    if failures:
        for target in targets:
            target.adapter.close()
        raise ConfigurationError("destination connection test failed: " + "; ".join(failures))

    estimates = {}
    estimate = getattr(source, "estimate_size", None)
    if callable(estimate):
        for unit in units:
            try:
                size = estimate(unit)
            except BackupError:
                size = None
            if size:
                estimates[unit.name] = int(size)

    started = utc_now()
    context = get_run_context()
    run_id = str(getattr(getattr(context, "task_run", None), "flow_run_id", None) or uuid.uuid4())
    key = job.encryption.key_bytes() if job.encryption else None
    plan = BackupPlan(
        job_name=job.name,
        job_id=block_id(job),
        run_id=run_id,
        stamp=new_run_stamp(started),
        started_at=started,
        source=source,
        source_kind=source.engine,
        source_name=block_name(job.source),
        source_description=source.describe(),
        source_info=info,
        units=units,
        targets=targets,
        codec=get_codec(job.compression),
        level=job.compression_level,
        key=key,
        key_id=job.encryption.key_id if job.encryption else None,
        chunk_size=job.encryption.chunk_size if job.encryption else 1 << 20,
        verify=job.verify,
        lock=lock,
        retention=job.retention,
        estimates=estimates,
    )
    logger.info(
        "Backing up %d file(s) (%s) to %d destination(s): %s",
        len(units),
        ", ".join(u.name for u in units),
        len(targets),
        ", ".join(t.description for t in targets),
    )
    return plan
