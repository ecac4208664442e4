"""The ``backup`` flow: initialize -> dump -> upload (commit) -> completion, then retention.

Entry point for deployments: ``flows/backup.py:backup_database`` with the parameter ``job`` (a saved
job's name). From Python: ``backup_database("nightly-app")`` or ``backup_database(BackupJob(...))``.

Every step is a Prefect task; the dump task is tagged ``db-backup`` and ``db-backup-<source>`` (plus the
job's own tags), so a tag concurrency limit (``prefect concurrency-limit create db-backup 2``) caps how many
dumps run at once. Retention runs only after
a fully successful backup, as the subflow ``apply-retention``; its failure is logged and visible in the UI
but never fails the backup.

Final states: ``Completed`` when every file reached every destination; ``Completed`` named ``Partial`` when
some did (the message names what failed; retention runs only on destinations where everything landed);
``Failed`` when nothing did.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.context import get_run_context
from prefect.states import Completed, State
from prefect_db_backup.blocks.job import BackupJob
from prefect_db_backup.errors import BackupError
from prefect_db_backup.flows.retention import apply_retention
from prefect_db_backup.results import BackupResult
from prefect_db_backup.tasks.completion import complete
from prefect_db_backup.tasks.dump import DumpOutcome, dump
from prefect_db_backup.tasks.initialize import initialize, load_job
from prefect_db_backup.tasks.upload import upload


class BackupFailedError(BackupError):
    """No file of the backup reached any destination."""


def _flow_run_id() -> str | None:
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


@flow(name="backup", persist_result=False, log_prints=False)
def backup_database(job: str | BackupJob, lock: bool = False) -> BackupResult | State:
    """Back up every database of a job to every destination, then apply retention.

    Args:
        job: A saved :class:`BackupJob`'s name, or the job itself.
        lock: Lock the backups of this run: retention never deletes them (and S3 object lock protects them
            where the bucket supports it).

    Returns:
        The run's :class:`BackupResult` (sizes, SHA-256, paths and status per database and destination).

    Raises:
        BackupError: If the job cannot start (bad configuration, unreachable source or destination) or no
            file reached any destination.
    """
    logger = get_run_logger()
    backup_job = load_job(job)
    flow_run_id = _flow_run_id()
    # Only the dump carries the concurrency tags: it is the step a limit must cap, and every tagged task
    # pays a concurrency-slot round trip to the API (about 0.6 s measured) even when no limit exists.
    dump_step = dump.with_options(tags=backup_job.concurrency_tags())
    plan = initialize(backup_job, lock=lock)
    outcomes: dict[str, DumpOutcome | None] = {}
    errors: dict[str, str] = {}
    try:
        for unit in plan.units:
            try:
                dumped = dump_step(plan, unit)
                outcomes[unit.name] = upload(plan, dumped, flow_run_id)
            except BackupError as exc:
                outcomes[unit.name] = None
                errors[unit.name] = str(exc)
                logger.error("Backup of %s failed: %s", unit.name, exc)
    finally:
        plan.close()
    result = complete(plan, outcomes, errors)

    if result.status == "failed":
        raise BackupFailedError(
            f"backup of job {plan.job_name} failed: "
            + "; ".join(f"{d.name}: {d.error or 'see logs'}" for d in result.databases)
        )
    succeeded = [
        index
        for index, target in enumerate(plan.targets, start=1)
        if target.description not in result.failed_destinations
    ]
    if backup_job.retention is not None and succeeded:
        state = apply_retention(backup_job, destinations=succeeded, return_state=True)
        if state.is_failed():
            logger.warning("Retention failed (the backup itself succeeded): %s", state.message)

    if result.status == "partial":
        failed = [f"{d.name}: {d.error}" for d in result.databases if d.status == "failed" and d.error]
        return Completed(
            name="Partial",
            message="Backup partially failed on: "
            + ", ".join(result.failed_destinations)
            + (f" ({'; '.join(failed)})" if failed else ""),
            data=result,
        )
    return result
