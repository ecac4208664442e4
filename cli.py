"""The ``prefect-db-backup`` command line.

Commands: ``run`` a job, ``list`` its backups, ``restore`` one, ``lock``/``unlock`` one, apply
``retention``, ``keygen`` a key, ``decrypt`` a file, and ``demo`` (the README's first command).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from prefect_db_backup.adapters.destination import Destination
    from prefect_db_backup.blocks.job import BackupJob

app = typer.Typer(
    name="prefect-db-backup",
    help="Database backups as a Prefect workload: dump, compress, encrypt, upload, verify, retain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JobArg = Annotated[str, typer.Argument(help="Name of a saved BackupJob block.")]
DestOpt = Annotated[int, typer.Option("--destination", "-d", help="1-based index of the job's destination.")]


def _destination(job: BackupJob, index: int) -> Destination:
    """The job's destination number ``index`` (1-based), wrapped with retries."""
    from prefect_db_backup.adapters.retry import RetryingDestination

    destinations = job.destinations
    if not 1 <= index <= len(destinations):
        _fail(f"--destination must be between 1 and {len(destinations)}")
    return RetryingDestination(destinations[index - 1].get_adapter())


def _load(job: str) -> BackupJob:
    """Load a saved job, or exit with a clear message."""
    from prefect_db_backup.errors import BackupError
    from prefect_db_backup.tasks.initialize import load_job

    try:
        return load_job(job)
    except BackupError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(1)


@app.command()
def run(job: JobArg, lock: Annotated[bool, typer.Option(help="Lock this run's backups.")] = False) -> None:
    """Run a saved backup job now, in this process."""
    from prefect_db_backup.errors import BackupError
    from prefect_db_backup.flows.backup import backup_database

    try:
        result = backup_database(job, lock=lock)
    except BackupError as exc:
        _fail(str(exc))
    from prefect_db_backup.units import format_bytes

    for db in result.databases:
        typer.echo(
            f"{db.status:8} {db.name}: {format_bytes(db.plaintext_size)} -> {format_bytes(db.stored_size)}"
            f"  {db.path or ''}"
        )
    typer.echo(f"status: {result.status}")
    if result.status != "success":
        raise typer.Exit(2)


@app.command("list")
def list_backups(job: JobArg, destination: DestOpt = 1) -> None:
    """List a job's committed backups on one destination, newest first."""
    from prefect_db_backup.inventory import take_inventory
    from prefect_db_backup.units import format_bytes

    backup_job = _load(job)
    with _destination(backup_job, destination) as dest:
        inventory = take_inventory(dest, backup_job.name)
    for backup in reversed(inventory.committed):
        m = backup.manifest
        lock = " locked" if m.locked else ""
        typer.echo(
            f"{m.started_at:%Y-%m-%d %H:%M:%S}Z  {format_bytes(m.stored_size):>10}  {backup.path}{lock}"
        )
    for path, why in inventory.unreadable:
        typer.echo(f"UNREADABLE {path}: {why}", err=True)
    for info in inventory.leftovers:
        typer.echo(f"uncommitted {info.path}", err=True)
    typer.echo(f"{len(inventory.committed)} committed backup(s) on {dest.describe()}", err=True)


@app.command()
def keygen() -> None:
    """Print a new random 256-bit key in the text form EncryptionProfile(key=...) accepts."""
    from prefect_db_backup.pipeline.keys import generate_key, key_to_text

    typer.echo(key_to_text(generate_key()))


@app.command()
def decrypt(
    source: Annotated[Path, typer.Argument(help="Encrypted backup file.")],
    target: Annotated[Path, typer.Argument(help="Where to write the result ('-' for stdout).")],
    key_file: Annotated[Path, typer.Option(help="File holding the key in text form.")],
    decompress: Annotated[bool, typer.Option(help="Also undo the compression.")] = False,
) -> None:
    """Decrypt a backup file without Prefect or its manifest (the header names the key id it needs)."""
    from prefect_db_backup.errors import BackupError
    from prefect_db_backup.pipeline.keys import key_from_text
    from prefect_db_backup.pipeline.stages import StageReader
    from prefect_db_backup.restore import codec_from_path, reading_stages

    try:
        key = key_from_text(key_file.read_text())
        stages = reading_stages(
            encrypted=True, key=key, codec=codec_from_path(source.name), decompress=decompress
        )
        _copy_through(source, target, StageReader(source.open("rb"), stages))
    except (BackupError, OSError) as exc:
        _fail(str(exc))


def _copy_through(source: Path, target: Path, reader: object) -> None:
    """Stream ``reader`` into ``target``; a failed run leaves no partial output file behind."""
    from prefect_db_backup.pipeline.stages import StageReader

    assert isinstance(reader, StageReader)
    if str(target) == "-":
        with reader:
            while chunk := reader.read(1 << 20):
                sys.stdout.buffer.write(chunk)
        return
    partial = target.with_name(f".{target.name}.partial")
    try:
        with reader, partial.open("wb") as out:
            while chunk := reader.read(1 << 20):
                out.write(chunk)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


@app.command()
def restore(
    job: JobArg,
    backup: Annotated[str, typer.Argument(help="Path of the backup file, as 'list' prints it.")],
    target_database: Annotated[
        str | None, typer.Option(help="Restore into this existing, empty database instead.")
    ] = None,
    destination: DestOpt = 1,
) -> None:
    """Restore one backup into the job's source server (verified, decrypted, decompressed on the fly)."""
    from prefect_db_backup.errors import BackupError
    from prefect_db_backup.restore import restore_backup

    backup_job = _load(job)
    key = backup_job.encryption.key_bytes() if backup_job.encryption else None
    try:
        with _destination(backup_job, destination) as dest:
            manifest = restore_backup(
                dest, backup, backup_job.source.get_adapter(), key=key, target_database=target_database
            )
    except BackupError as exc:
        _fail(str(exc))
    typer.echo(f"restored {manifest.backup_path} into {target_database or manifest.database or 'the server'}")


def _set_lock(job: str, backup: str, destination: int, locked: bool) -> None:
    from prefect_db_backup.errors import BackupError
    from prefect_db_backup.locking import set_locked

    backup_job = _load(job)
    try:
        with _destination(backup_job, destination) as dest:
            storage = set_locked(dest, backup_job.name, backup, locked)
    except BackupError as exc:
        _fail(str(exc))
    where = " (and at the storage level)" if storage else ""
    typer.echo(f"{'locked' if locked else 'unlocked'} {backup}{where}")


@app.command()
def lock(
    job: JobArg, backup: Annotated[str, typer.Argument(help="Backup file path.")], destination: DestOpt = 1
) -> None:
    """Lock a backup: retention never deletes it."""
    _set_lock(job, backup, destination, True)


@app.command()
def unlock(
    job: JobArg, backup: Annotated[str, typer.Argument(help="Backup file path.")], destination: DestOpt = 1
) -> None:
    """Unlock a backup: retention may delete it again."""
    _set_lock(job, backup, destination, False)


@app.command()
def retention(
    job: JobArg, dry_run: Annotated[bool, typer.Option(help="Show the plan, delete nothing.")] = False
) -> None:
    """Apply the job's retention policy now (the apply-retention flow)."""
    from prefect_db_backup.errors import BackupError
    from prefect_db_backup.flows.retention import apply_retention

    try:
        outcomes = apply_retention(job, dry_run=dry_run)
    except BackupError as exc:
        _fail(str(exc))
    for outcome in outcomes:
        verb = "would delete" if dry_run else "deleted"
        typer.echo(f"{outcome.destination}: kept {len(outcome.kept)}, {verb} {len(outcome.deleted)}")
        for path in outcome.deleted:
            typer.echo(f"  {verb} {path} ({outcome.reasons.get(path, '')})")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the sample database and ./backups go.")] = Path("."),
) -> None:
    """Back up a sample SQLite database (encrypted, compressed) into ./backups, then restore and check it."""
    from prefect_db_backup.flows.demo import run_demo

    run_demo(workdir)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
