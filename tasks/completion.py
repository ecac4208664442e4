"""Step 4: final status, a summary table artifact and a closing log line."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect_db_backup.manifest import utc_now
from prefect_db_backup.results import BackupResult, DatabaseResult, StoredCopy, overall_status
from prefect_db_backup.tasks.dump import DumpOutcome
from prefect_db_backup.tasks.options import STEP_OPTIONS
from prefect_db_backup.tasks.plan import BackupPlan
from prefect_db_backup.tasks.progress import artifact_key
from prefect_db_backup.units import format_bytes


def database_result(
    plan: BackupPlan, name: str, outcome: DumpOutcome | None, error: str | None
) -> DatabaseResult:
    """Summarize one unit: one copy per destination, each either complete or failed with its reason."""
    unit = next(u for u in plan.units if u.name == name)
    copies = []
    for target in plan.targets:
        if outcome is not None and target.key in outcome.committed:
            copies.append(StoredCopy(destination=target.description, path=outcome.path, ok=True))
        else:
            reason = (outcome.errors.get(target.key) if outcome else None) or error or "not stored"
            copies.append(StoredCopy(destination=target.description, ok=False, error=reason))
    status = overall_status([c.ok for c in copies])
    if outcome is None:
        return DatabaseResult(name=name, kind=unit.kind, status="failed", copies=copies, error=error)
    return DatabaseResult(
        name=name,
        kind=unit.kind,
        status=status,
        plaintext_size=outcome.plaintext_size,
        compressed_size=outcome.compressed_size,
        stored_size=outcome.stored_size,
        sha256=outcome.sha256,
        seconds=(outcome.finished_at - outcome.started_at).total_seconds(),
        copies=copies,
        error=error,
    )


@task(name="completion", **STEP_OPTIONS)
def complete(
    plan: BackupPlan, outcomes: dict[str, DumpOutcome | None], errors: dict[str, str]
) -> BackupResult:
    """Build the run's result, publish a summary table and log the final status."""
    logger = get_run_logger()
    databases = [database_result(plan, u.name, outcomes.get(u.name), errors.get(u.name)) for u in plan.units]
    copies = [c for d in databases for c in d.copies]
    status = overall_status([c.ok for c in copies])
    failed_destinations = sorted({c.destination for c in copies if not c.ok})
    result = BackupResult(
        job=plan.job_name,
        run_id=plan.run_id,
        status=status,
        started_at=plan.started_at,
        finished_at=utc_now(),
        databases=databases,
        failed_destinations=failed_destinations,
    )
    rows = [
        {
            "database": d.name,
            "status": d.status,
            "plain": format_bytes(d.plaintext_size),
            "compressed": format_bytes(d.compressed_size),
            "stored": format_bytes(d.stored_size),
            "seconds": round(d.seconds, 1),
            "path": d.path or "",
            "sha256": d.sha256 or "",
            "failures": "; ".join(f"{c.destination}: {c.error}" for c in d.copies if not c.ok),
        }
        for d in databases
    ]
    try:
        create_table_artifact(
            rows,
            key=artifact_key("backup-summary", plan.job_name),
            description=f"Backup of job {plan.job_name}: {status}",
        )
    except Exception as exc:  # the summary is informative; the manifests are the record
        logger.warning("Could not publish the summary artifact: %s", exc)
    log = logger.info if status == "success" else logger.error
    log(
        "Backup %s: %d file(s), %s plain, %s stored per destination%s",
        status,
        len(databases),
        format_bytes(result.plaintext_size),
        format_bytes(result.stored_size),
        f"; failed: {', '.join(failed_destinations)}" if failed_destinations else "",
    )
    return result
