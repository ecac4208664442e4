"""Step 2: stream one database through compress -> encrypt -> hash to every destination."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from prefect import get_run_logger, task
from prefect_db_backup.adapters.destination import ObjectInfo, ObjectWriter
from prefect_db_backup.adapters.source import DumpUnit
from prefect_db_backup.errors import BackupError
from prefect_db_backup.manifest import backup_file_path, utc_now
from prefect_db_backup.pipeline.encryption import EncryptStage
from prefect_db_backup.pipeline.runner import AllWritersFailedError, pump
from prefect_db_backup.pipeline.stages import CountStage, Stage
from prefect_db_backup.tasks.options import STEP_OPTIONS
from prefect_db_backup.tasks.plan import BackupPlan
from prefect_db_backup.tasks.progress import ProgressReporter, artifact_key
from prefect_db_backup.units import format_bytes, format_rate


class _CompressedCount(CountStage):
    name = "compressed"


@dataclass
class DumpOutcome:
    """The result of dumping one unit: the data file, committed (not yet a backup) where it succeeded.

    Attributes:
        unit: What was dumped.
        path: Relative path of the backup file, the same on every destination.
        committed: Data files that landed, by target key.
        errors: Why a target failed, by target key.
    """

    unit: DumpUnit
    path: str
    started_at: datetime
    finished_at: datetime
    plaintext_size: int = 0
    compressed_size: int = 0
    stored_size: int = 0
    sha256: str = ""
    compression: dict[str, object] = field(default_factory=dict)
    encryption: dict[str, object] | None = None
    committed: dict[str, ObjectInfo] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def build_stages(plan: BackupPlan) -> tuple[list[Stage], Stage, Stage | None]:
    """The transforming stages of a backup file: compressor, compressed-size counter, optional encryptor."""
    compressor = plan.codec.compressor(plan.level)
    encryptor = EncryptStage(plan.key, chunk_size=plan.chunk_size) if plan.key is not None else None
    stages: list[Stage] = [compressor, _CompressedCount()]
    if encryptor is not None:
        stages.append(encryptor)
    return stages, compressor, encryptor


@task(name="dump", task_run_name="dump-{unit.name}", **STEP_OPTIONS)
def dump(plan: BackupPlan, unit: DumpUnit) -> DumpOutcome:
    """Dump one unit once and write it to every destination of the plan.

    A destination that fails is aborted (nothing of it stays visible) and reported; the others go on.

    Returns:
        Where the data file landed and what was measured.

    Raises:
        DumpFailedError: If the dump tool failed; every writer is then aborted.
        AllWritersFailedError: If no destination could store the file.
    """
    logger = get_run_logger()
    path = backup_file_path(
        plan.job_name, unit.name, plan.stamp, unit.extension, plan.codec.extension, plan.key is not None
    )
    stages, compressor, encryptor = build_stages(plan)
    started = utc_now()
    outcome = DumpOutcome(unit=unit, path=path, started_at=started, finished_at=started)
    writers: dict[str, ObjectWriter] = {}
    size_hint = plan.estimates.get(unit.name)
    for target in plan.targets:
        try:
            writers[target.key] = target.adapter.open_writer(path, size_hint=size_hint)
        except BackupError as exc:
            outcome.errors[target.key] = str(exc)
            logger.error("Cannot start upload to %s: %s", target.description, exc)
    if not writers:
        raise AllWritersFailedError(f"no destination accepted {path}: " + "; ".join(outcome.errors.values()))

    label = f"{plan.job_name}/{unit.name}"
    reporter = ProgressReporter(
        artifact_key("backup", plan.job_name, unit.name), label, plan.estimates.get(unit.name)
    )
    stream = plan.source.open_dump(unit)
    try:
        with reporter:
            result = pump(stream, stages, writers, on_progress=reporter.update)
            stream.close()  # raises DumpFailedError when the dump did not end cleanly
    except BaseException:
        stream.abort()
        for writer in writers.values():
            writer.abort()
        raise

    for key, failure in result.failed.items():
        outcome.errors[key] = str(failure)
    for key, writer in writers.items():
        if key in result.failed:
            continue
        try:
            outcome.committed[key] = writer.commit()
        except BackupError as exc:
            writer.abort()
            outcome.errors[key] = str(exc)
    for key, error in outcome.errors.items():
        logger.error("Upload of %s to %s failed: %s", path, _describe(plan, key), error)

    outcome.finished_at = utc_now()
    outcome.plaintext_size = result.plaintext_size
    outcome.compressed_size = int(result.stage_results.get("compressed", {}).get("size", 0))
    outcome.stored_size = result.stored_size
    outcome.sha256 = result.sha256
    outcome.compression = compressor.result()
    outcome.encryption = encryptor.result() if encryptor is not None else None
    ratio = result.plaintext_size / outcome.compressed_size if outcome.compressed_size else 0.0
    logger.info(
        "Dumped %s: %s plain -> %s stored (ratio %.2f) in %.1f s at %s; path %s",
        label,
        format_bytes(result.plaintext_size),
        format_bytes(result.stored_size),
        ratio,
        result.seconds,
        format_rate(result.plaintext_size, result.seconds),
        path,
    )
    if not outcome.committed:
        raise AllWritersFailedError(f"no destination stored {path}: " + "; ".join(outcome.errors.values()))
    return outcome


def _describe(plan: BackupPlan, key: str) -> str:
    return next((t.description for t in plan.targets if t.key == key), key)
