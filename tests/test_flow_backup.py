"""The backup flow end to end on a temporary Prefect server, against real sources and destinations."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.adapters.process import ProcessDumpStream
from prefect_db_backup.adapters.sources.sqlite import SQLiteAdapter
from prefect_db_backup.blocks import (
    BackupJob,
    EncryptionProfile,
    LocalDestination,
    RetentionPolicy,
    SQLiteSource,
)
from prefect_db_backup.errors import BackupError
from prefect_db_backup.flows import retention as retention_flow
from prefect_db_backup.flows.backup import backup_database
from prefect_db_backup.inventory import take_inventory
from prefect_db_backup.manifest import Manifest
from prefect_db_backup.restore import restore_backup
from pydantic import ValidationError

pytestmark = pytest.mark.usefixtures("prefect_server")

PATH_PATTERN = re.compile(r"^(?P<job>[^/]+)/(?P=job)_(?P<db>.+)_\d{8}T\d{6}Z-[0-9a-f]{6}\.sqlite\.zst\.enc$")


def _make_sqlite(path: Path, rows: int = 2000) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")
        db.executemany(
            "INSERT INTO t (v, b) VALUES (?, ?)",
            ((f"row {i} ü", bytes([i % 256]) * 100) for i in range(rows)),
        )


def _rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT * FROM t ORDER BY id").fetchall()


def _job(tmp_path: Path, **kwargs: object) -> BackupJob:
    db = tmp_path / "app.sqlite"
    if not db.exists():
        _make_sqlite(db)
    options: dict[str, object] = {
        "name": "app-job",
        "source": SQLiteSource(path=str(db)),
        "destinations": [LocalDestination(path=str(tmp_path / "backups"))],
        "compression": "zstd",
        "encryption": EncryptionProfile.generate(),
    }
    options.update(kwargs)
    return BackupJob(**options)  # type: ignore[arg-type]


def test_sqlite_backup_result_manifest_and_restore(tmp_path: Path) -> None:
    job = _job(tmp_path)
    result = backup_database(job)
    assert result.status == "success"
    [db] = result.databases
    assert db.status == "success" and db.name == "app"
    assert PATH_PATTERN.match(db.path or ""), db.path
    stored = (tmp_path / "backups" / (db.path or "")).read_bytes()
    assert len(stored) == db.stored_size
    assert hashlib.sha256(stored).hexdigest() == db.sha256
    assert db.plaintext_size > db.compressed_size > 0
    assert db.seconds > 0

    manifest_file = tmp_path / "backups" / f"{db.path}.meta.json"
    manifest = Manifest.model_validate(json.loads(manifest_file.read_text()))
    assert manifest.job_name == "app-job"
    assert manifest.database == "app"
    assert manifest.sha256 == db.sha256 and manifest.stored_size == db.stored_size
    assert manifest.plaintext_size == db.plaintext_size
    assert manifest.encryption is not None and manifest.encryption.key_id == job.encryption.key_id  # type: ignore[union-attr]
    assert manifest.compression.codec == "zstd"
    assert manifest.locked is False
    assert manifest.flow_run_id
    assert manifest.started_at.tzinfo is not None and manifest.finished_at >= manifest.started_at
    assert job.encryption.key.get_secret_value() not in manifest_file.read_text()  # type: ignore[union-attr]

    restored = tmp_path / "restored.sqlite"
    restore_backup(
        LocalAdapter(root=tmp_path / "backups"),
        db.path or "",
        SQLiteAdapter(path=str(restored)),
        key=job.encryption.key_bytes(),  # type: ignore[union-attr]
    )
    assert _rows(restored) == _rows(tmp_path / "app.sqlite")


def test_sqlite_backup_is_consistent_under_concurrent_writes(tmp_path: Path) -> None:
    db = tmp_path / "busy.sqlite"
    _make_sqlite(db, rows=50_000)
    stop = threading.Event()

    def writer() -> None:
        with sqlite3.connect(db, timeout=30) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO t (v, b) VALUES ('during', zeroblob(2000))")
                conn.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        result = backup_database(_job(tmp_path, source=SQLiteSource(path=str(db)), encryption=None))
    finally:
        stop.set()
        thread.join()
    path = result.databases[0].path
    restored = tmp_path / "restored.sqlite"
    restore_backup(LocalAdapter(root=tmp_path / "backups"), path or "", SQLiteAdapter(path=str(restored)))
    ids = [row[0] for row in _rows(restored)]
    assert ids == list(range(1, len(ids) + 1)), "a consistent snapshot holds a gap-free prefix of the inserts"
    assert len(ids) >= 50_000


def test_retention_keeps_the_newest_backups_of_the_job(tmp_path: Path) -> None:
    job = _job(tmp_path, retention=RetentionPolicy(keep_last=2), encryption=None)
    paths = [backup_database(job).databases[0].path for _ in range(3)]
    # a file of another job in the same destination is never touched
    other = _job(tmp_path, name="other-job", encryption=None)
    other_path = backup_database(other).databases[0].path
    kept = [b.path for b in take_inventory(LocalAdapter(root=tmp_path / "backups"), "app-job").committed]
    assert kept == paths[1:]
    assert (tmp_path / "backups" / (other_path or "")).exists()


def test_retention_failure_never_fails_the_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise BackupError("injected retention failure")

    monkeypatch.setattr(retention_flow, "retain_on", broken)
    job = _job(tmp_path, retention=RetentionPolicy(keep_last=1), encryption=None)
    state = backup_database(job, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.status == "success"
    assert (tmp_path / "backups" / f"{result.databases[0].path}.meta.json").exists()


def _failing_dump(*args: object, **kwargs: object) -> ProcessDumpStream:
    script = "head -c 3000000 /dev/urandom; echo 'pg_dump: error: connection lost' >&2; exit 3"
    return ProcessDumpStream(["sh", "-c", script], description="test dump")


def test_failed_dump_leaves_no_backup_and_skips_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(tmp_path, retention=RetentionPolicy(keep_last=1), encryption=None)
    good = backup_database(job).databases[0].path
    calls: list[object] = []
    monkeypatch.setattr(retention_flow, "retain_on", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(SQLiteAdapter, "open_dump", _failing_dump)
    state = backup_database(job, return_state=True)
    assert state.is_failed()
    assert "connection lost" in (state.message or "")
    assert calls == [], "retention must never run after a failed backup"
    files = sorted(
        p.relative_to(tmp_path / "backups").as_posix()
        for p in (tmp_path / "backups").rglob("*")
        if p.is_file()
    )
    assert files == [good, f"{good}.meta.json"], "the failed run left something behind"


class _BrokenAdapter(LocalAdapter):
    """A real local destination whose uploads fail after 1 MiB (fault injection)."""

    def open_writer(self, path: str, *, overwrite: bool = False, size_hint: int | None = None):  # type: ignore[no-untyped-def]
        writer = super().open_writer(path, overwrite=overwrite, size_hint=size_hint)
        real_write = writer.write
        written = [0]

        def write(data: bytes | memoryview) -> None:
            written[0] += len(data)
            if written[0] > 1 << 20:
                raise BackupError("injected: connection reset by peer")
            real_write(data)

        writer.write = write  # type: ignore[method-assign]
        return writer


class _BrokenDestination(LocalDestination):
    _block_type_slug = "test-broken-local"

    def get_adapter(self) -> LocalAdapter:
        return _BrokenAdapter(root=self.path)


def test_partial_when_one_destination_fails(tmp_path: Path) -> None:
    db = tmp_path / "big.sqlite"
    _make_sqlite(db, rows=30_000)
    job = _job(
        tmp_path,
        source=SQLiteSource(path=str(db)),
        compression="none",
        encryption=None,
        destinations=[
            LocalDestination(path=str(tmp_path / "good")),
            _BrokenDestination(path=str(tmp_path / "bad")),
        ],
        retention=RetentionPolicy(keep_last=1),
    )
    state = backup_database(job, return_state=True)
    assert state.is_completed() and state.name == "Partial"
    assert str(tmp_path / "bad") in (state.message or "")
    result = state.result()
    assert result.status == "partial"
    assert result.failed_destinations == [str(tmp_path / "bad")]
    assert list((tmp_path / "bad").rglob("*.meta.json")) == []
    assert [p for p in (tmp_path / "bad").rglob("*") if p.is_file()] == []
    assert len(list((tmp_path / "good").rglob("*.meta.json"))) == 1


def test_unsafe_names_are_refused_naming_the_field(tmp_path: Path) -> None:
    for bad in ("../escape", "a/b", "x\x00y", ".."):
        with pytest.raises(ValidationError, match="name"):
            _job(tmp_path, name=bad)


def test_saved_job_runs_by_name_and_the_dump_carries_concurrency_tags(tmp_path: Path) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    name = f"job-{uuid.uuid4().hex[:8]}"
    source = SQLiteSource(path=str(tmp_path / "app.sqlite"))
    _make_sqlite(tmp_path / "app.sqlite")
    source.save(f"{name}-src")
    LocalDestination(path=str(tmp_path / "saved-dest")).save(f"{name}-dest")
    job = _job(
        tmp_path,
        name=name,
        source=SQLiteSource.load(f"{name}-src"),
        destinations=[LocalDestination.load(f"{name}-dest"), LocalDestination(path=str(tmp_path / "inline"))],
    )
    job.save(name)
    loaded = BackupJob.load(name)
    assert isinstance(loaded.source, SQLiteSource), "a saved nested block must load as its own type"
    assert [type(d) for d in loaded.destinations] == [LocalDestination, LocalDestination]
    state = backup_database(name, return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id

    async def task_tags() -> list[list[str]]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            return [[*sorted(run.tags), run.name] for run in runs]

    tags = {run[-1].split("-")[0]: run[:-1] for run in asyncio.run(task_tags())}
    assert set(tags) == {"initialize", "dump", "commit", "completion"}
    assert "db-backup" in tags["dump"] and f"db-backup-{name}-src" in tags["dump"]
    assert tags["initialize"] == tags["commit"] == tags["completion"] == []
    assert len(list((tmp_path / "saved-dest").rglob("*.meta.json"))) == 1
    assert len(list((tmp_path / "inline").rglob("*.meta.json"))) == 1
