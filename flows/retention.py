"""The ``apply-retention`` flow: apply a job's retention policy to each of its destinations.

It runs as a subflow after every successful backup (its failure shows in the UI but never fails the
backup) and as its own deployment on a schedule. Only committed backups of the job count, proven by their
manifests; locked backups, the newest backup and unreadable manifests are never deleted; uncommitted
leftovers that match the job's file naming and are older than a grace period are removed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect_db_backup.adapters.destination import Destination, ObjectInfo
from prefect_db_backup.adapters.retry import RetryingDestination
from prefect_db_backup.blocks.job import BackupJob
from prefect_db_backup.errors import BackupError
from prefect_db_backup.inventory import Inventory, take_inventory
from prefect_db_backup.manifest import manifest_path, utc_now
from prefect_db_backup.retention.policy import BackupRecord, RetentionRules, plan_retention
from prefect_db_backup.tasks.initialize import load_job
from prefect_db_backup.tasks.progress import artifact_key
from pydantic import BaseModel, Field

#: Uncommitted files younger than this are left alone: they may belong to a backup still being committed.
DEFAULT_LEFTOVER_GRACE = timedelta(hours=24)
#: Rows of the retention table artifact at most (deletions are listed first).
MAX_ARTIFACT_ROWS = 1000


class RetentionOutcome(BaseModel):
    """What retention did (or, in a dry run, would do) on one destination."""

    destination: str
    dry_run: bool
    kept: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    reasons: dict[str, str] = Field(default_factory=dict, description="Deciding rule(s) per backup path.")
    unreadable: list[str] = Field(default_factory=list, description="Manifests that could not be trusted.")
    leftovers_removed: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


def leftover_pattern(job_name: str) -> re.Pattern[str]:
    """File names a backup of ``job_name`` can have: ``<job>/<job>_<unit>_<YYYYMMDDTHHMMSSZ>-<hex>.<ext>``."""
    job = re.escape(job_name)
    return re.compile(rf"^{job}/{job}_[^/]+_\d{{8}}T\d{{6}}Z-[0-9a-f]{{6}}\.[^/]+$")


def stale_leftovers(inventory: Inventory, job_name: str, now: datetime, grace: timedelta) -> list[ObjectInfo]:
    """Leftovers that follow the job's naming, are not manifests, and are older than ``grace``.

    A leftover without a modification time is never considered stale.
    """
    pattern = leftover_pattern(job_name)
    return [
        info
        for info in inventory.leftovers
        if pattern.match(info.path)
        and not info.path.endswith(".meta.json")
        and info.modified is not None
        and now - info.modified > grace
    ]


def retain_on(
    destination: Destination,
    description: str,
    job_name: str,
    rules: RetentionRules,
    *,
    now: datetime,
    dry_run: bool,
    leftover_grace: timedelta = DEFAULT_LEFTOVER_GRACE,
) -> RetentionOutcome:
    """Plan and apply retention for one job on one destination.

    Deletion removes the manifest first, then the data file, so an interruption leaves at worst an
    uncommitted leftover, never a manifest pointing at nothing.

    Raises:
        BackupError: If the destination cannot be listed (nothing is deleted then).
    """
    logger = get_run_logger()
    outcome = RetentionOutcome(destination=description, dry_run=dry_run)
    inventory = take_inventory(destination, job_name)
    for path, why in inventory.unreadable:
        logger.warning("Keeping the backup of unreadable manifest %s: %s", path, why)
        outcome.unreadable.append(path)
    records = [
        BackupRecord(backup_id=b.path, created_at=b.manifest.started_at, locked=b.manifest.locked)
        for b in inventory.committed
    ]
    plan = plan_retention(rules, records, now)
    for decision in plan.decisions:
        outcome.reasons[decision.backup.backup_id] = ", ".join(decision.reasons)
        (outcome.kept if decision.keep else outcome.deleted).append(decision.backup.backup_id)
    stale = stale_leftovers(inventory, job_name, now, leftover_grace)
    outcome.leftovers_removed = [info.path for info in stale]
    if dry_run:
        return outcome
    for path in outcome.deleted:
        try:
            destination.delete(manifest_path(path))
            destination.delete(path)
            logger.info("Deleted %s from %s (%s)", path, description, outcome.reasons[path])
        except BackupError as exc:
            outcome.errors.append(f"{path}: {exc}")
            logger.error("Could not delete %s from %s: %s", path, description, exc)
    for path in outcome.leftovers_removed:
        try:
            destination.delete(path)
            logger.warning("Removed uncommitted leftover %s from %s", path, description)
        except BackupError as exc:
            outcome.errors.append(f"{path}: {exc}")
    return outcome


def _publish(job_name: str, outcomes: list[RetentionOutcome]) -> None:
    rows = []
    for outcome in outcomes:
        for path in outcome.kept + outcome.deleted:
            rows.append(
                {
                    "destination": outcome.destination,
                    "backup": path,
                    "action": "keep"
                    if path in outcome.kept
                    else ("would delete" if outcome.dry_run else "delete"),
                    "rule": outcome.reasons.get(path, ""),
                }
            )
        rows += [
            {"destination": outcome.destination, "backup": p, "action": "keep", "rule": "unreadable manifest"}
            for p in outcome.unreadable
        ]
        rows += [
            {
                "destination": outcome.destination,
                "backup": p,
                "action": "would remove" if outcome.dry_run else "remove",
                "rule": "uncommitted leftover",
            }
            for p in outcome.leftovers_removed
        ]
    # Deletions first; a destination with many thousands of backups gets a readable, bounded table.
    rows.sort(key=lambda row: row["action"] == "keep")
    if len(rows) > MAX_ARTIFACT_ROWS:
        hidden = len(rows) - MAX_ARTIFACT_ROWS + 1
        rows = rows[: MAX_ARTIFACT_ROWS - 1]
        rows.append(
            {"destination": "", "backup": f"... {hidden} more rows (kept backups)", "action": "", "rule": ""}
        )
    create_table_artifact(
        rows, key=artifact_key("retention", job_name), description=f"Retention of job {job_name}"
    )


@flow(name="apply-retention", persist_result=False)
def apply_retention(
    job: str | BackupJob,
    destinations: list[int] | None = None,
    dry_run: bool = False,
) -> list[RetentionOutcome]:
    """Apply the job's retention policy to its destinations.

    Args:
        job: A saved job's name, or a :class:`BackupJob`.
        destinations: 1-based indexes of the job's destinations to process; all when empty.
        dry_run: Return the plan and delete nothing.

    Returns:
        One outcome per destination processed.

    Raises:
        BackupError: If any destination could not be processed (the others still were).
    """
    logger = get_run_logger()
    backup_job = load_job(job)
    if backup_job.retention is None or backup_job.retention.rules().is_noop:
        logger.info("Job %s has no retention rules: every backup is kept", backup_job.name)
        return []
    rules = backup_job.retention.rules()
    now = utc_now()
    outcomes: list[RetentionOutcome] = []
    failures: list[str] = []
    for index, block in enumerate(backup_job.destinations, start=1):
        if destinations and index not in destinations:
            continue
        description = block.describe()
        try:
            with RetryingDestination(block.get_adapter()) as destination:
                outcome = retain_on(
                    destination, description, backup_job.name, rules, now=now, dry_run=dry_run
                )
        except BackupError as exc:
            failures.append(f"{description}: {exc}")
            logger.error("Retention on %s failed: %s", description, exc)
            continue
        outcomes.append(outcome)
        failures += [f"{description}: {e}" for e in outcome.errors]
        logger.info(
            "Retention on %s (%s): kept %d, %s %d, removed %d leftover(s)",
            description,
            rules.describe(),
            len(outcome.kept),
            "would delete" if dry_run else "deleted",
            len(outcome.deleted),
            len(outcome.leftovers_removed),
        )
    _publish(backup_job.name, outcomes)
    if failures:
        raise BackupError("retention failed on: " + "; ".join(failures))
    return outcomes
