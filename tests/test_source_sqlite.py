"""SQLiteAdapter: the source conformance suite, plus online copies under concurrent writers."""

from __future__ import annotations

import io
import os
import random
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect_db_backup.adapters.registry import source_class
from prefect_db_backup.adapters.source import Source
from prefect_db_backup.adapters.sources.sqlite import SQLiteAdapter
from prefect_db_backup.adapters.testing.source_suite import SourceSuite, dump_to_file
from prefect_db_backup.errors import ConfigurationError, NotFoundError, RestoreFailedError

MiB = 1 << 20
SUFFIX = ".sqlite"


def load_awkward_file(path: Path) -> None:
    rng = random.Random(5)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(
            '''
            PRAGMA user_version = 42;
            PRAGMA application_id = 1234567;
            CREATE TABLE kinds (id INTEGER PRIMARY KEY AUTOINCREMENT, i INTEGER, r REAL, t TEXT, b BLOB,
                                anything, n NUMERIC, d TEXT DEFAULT (datetime('now')) NOT NULL);
            CREATE TABLE audit (kind_id INTEGER, note TEXT);
            CREATE TRIGGER kinds_audit AFTER INSERT ON kinds BEGIN
                INSERT INTO audit VALUES (NEW.id, 'inserted ' || NEW.id);
            END;
            CREATE VIEW kinds_view AS SELECT id, upper(t) AS t FROM kinds WHERE t IS NOT NULL;
            CREATE INDEX kinds_t ON kinds (t);
            CREATE TABLE "odd name ü 😀" ("key" TEXT PRIMARY KEY, "value ""quoted""" BLOB) WITHOUT ROWID;
            CREATE TABLE big (id INTEGER PRIMARY KEY, t TEXT, b BLOB);
            '''
        )
        rows = [
            (
                2**63 - 1,
                float("inf"),
                "Ünïcödé 😀 " + "".join(chr(c) for c in range(1, 32)),
                bytes(range(256)),
                1,
                "1e400",
            ),
            (-(2**63), float("-inf"), "", b"", "text in an untyped column", "12.50"),
            (None, None, None, None, None, None),
            (0, -0.0, "\\N 'quote' \"double\"", b"\x00" * 9, b"blob in an untyped column", None),
            (1, 1.7976931348623157e308, "NUL inside: a\x00b", b"\xff", 3.25, "-0"),
        ]
        conn.executemany("INSERT INTO kinds (i, r, t, b, anything, n) VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.execute("DELETE FROM kinds WHERE id = 3")  # a gap, and sqlite_sequence stays ahead
        conn.executemany(
            'INSERT INTO "odd name ü 😀" VALUES (?, ?)', [("a", b"1"), ("ü", None), ("", b"\x00")]
        )
        conn.execute("INSERT INTO big (t, b) VALUES (?, ?)", ("x😀" * MiB, rng.randbytes(3 * MiB)))
        for number in range(50):
            conn.execute(f"CREATE TABLE many_{number:02d} (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            conn.executemany(
                f"INSERT INTO many_{number:02d} (v) VALUES (?)", [(str(n),) for n in range(number)]
            )
        conn.commit()
    finally:
        conn.close()


def snapshot_file(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        result: dict[str, Any] = {
            "schema": conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall(),
            "user_version": conn.execute("PRAGMA user_version").fetchone(),
            "application_id": conn.execute("PRAGMA application_id").fetchone(),
        }
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name"
        ):
            quoted = '"' + name.replace('"', '""') + '"'
            rows = conn.execute(f"SELECT * FROM {quoted}").fetchall()
            result[f"rows:{name}"] = sorted(rows, key=repr)
    finally:
        conn.close()
    return result


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "dbs"
    path.mkdir()
    return path


@pytest.fixture
def fresh_database(folder: Path) -> Callable[[], str]:
    def make() -> str:
        name = f"db_{uuid.uuid4().hex[:10]}"
        sqlite3.connect(folder / f"{name}{SUFFIX}").close()
        return name

    return make


class TestSQLiteConformance(SourceSuite):
    # A file has no credentials, cannot be "unreachable" (a missing file is NotFoundError, tested below)
    # and is copied in-process (no child process to kill or whose arguments could leak anything).
    test_wrong_password_is_permanent_and_quick = None
    test_unreachable_server_fails_in_bounded_time = None
    test_describe_has_no_secret = None
    test_password_never_in_process_arguments = None
    test_killed_dump_fails_on_close = None

    @pytest.fixture
    def source_for(self, folder: Path) -> Callable[[str], Source]:
        return lambda database: SQLiteAdapter(folder / f"{database}{SUFFIX}")

    @pytest.fixture
    def source(self, source_for: Callable[[str], Source], fresh_database: Callable[[], str]) -> Source:
        return source_for(fresh_database())

    @pytest.fixture
    def load_awkward_data(self, folder: Path) -> Callable[[str], None]:
        return lambda database: load_awkward_file(folder / f"{database}{SUFFIX}")

    @pytest.fixture
    def snapshot(self, folder: Path) -> Callable[[str], Any]:
        return lambda database: snapshot_file(folder / f"{database}{SUFFIX}")

    @pytest.fixture
    def verify_restored(self, folder: Path) -> Callable[[str, str], None]:
        def check(original: str, restored: str) -> None:
            conn = sqlite3.connect(folder / f"{restored}{SUFFIX}")
            try:
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                conn.execute("INSERT INTO kinds (i) VALUES (7)")
                new_id = conn.execute("SELECT max(id) FROM kinds").fetchone()[0]
                assert new_id == 6  # AUTOINCREMENT continues after the deleted row, from sqlite_sequence
                assert conn.execute("SELECT note FROM audit WHERE kind_id = 6").fetchone() == ("inserted 6",)
            finally:
                conn.close()

        return check


# -- SQLite-specific rules ---------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sqlite3, sys
    path, wal = sys.argv[1], sys.argv[2] == "wal"
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM events").fetchone()[0]
    print("ready", flush=True)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO events VALUES (?, randomblob(400))", (next_id,))
        conn.execute("INSERT INTO events VALUES (?, randomblob(400))", (next_id + 1,))
        conn.execute("UPDATE totals SET n = n + 2")
        conn.execute("COMMIT")
        next_id += 2
    """
)


@pytest.fixture(params=["delete", "wal"])
def busy_database(request: pytest.FixtureRequest, folder: Path) -> Iterator[Path]:
    """A database with a writer process committing two rows and a counter per transaction, non-stop."""
    path = folder / f"busy{SUFFIX}"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload BLOB)")
    conn.execute("CREATE TABLE totals (n INTEGER)")
    conn.executemany("INSERT INTO events VALUES (?, randomblob(400))", [(i,) for i in range(1, 10001)])
    conn.execute("INSERT INTO totals VALUES (10000)")
    conn.commit()
    conn.close()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), request.param], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        yield path
    finally:
        writer.kill()
        writer.wait()


def _events(path: Path) -> int:
    conn = sqlite3.connect(path, timeout=60)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("pages_per_step", [64, 4096])
def test_online_copy_under_concurrent_writes_is_consistent(
    busy_database: Path, tmp_path: Path, pages_per_step: int
) -> None:
    adapter = SQLiteAdapter(busy_database, pages_per_step=pages_per_step, step_budget=2.0)
    time.sleep(0.2)
    before = _events(busy_database)
    start = time.monotonic()
    copy = tmp_path / "copy.sqlite"
    dump_to_file(adapter, adapter.database_unit("busy"), copy)
    elapsed = time.monotonic() - start
    assert elapsed < 45  # generous: the machine is shared; typical is 1-5 s
    after = _events(busy_database)
    assert after > before, "the writer made no progress during the test"
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count, low, high = conn.execute("SELECT count(*), min(id), max(id) FROM events").fetchone()
        (total,) = conn.execute("SELECT n FROM totals").fetchone()
    finally:
        conn.close()
    # A consistent prefix: ids 1..N without a gap, N even (whole transactions), and the counter agrees.
    assert (low, count) == (1, high)
    assert count % 2 == 0 and count == total
    assert count >= before


def test_copy_is_private_and_removed(folder: Path, fresh_database: Callable[[], str]) -> None:
    name = fresh_database()
    load_awkward_file(folder / f"{name}{SUFFIX}")
    spool = folder.parent / "spool"
    spool.mkdir()
    adapter = SQLiteAdapter(folder / f"{name}{SUFFIX}", spool_dir=str(spool))
    stream = adapter.open_dump(adapter.database_unit(name))
    (private,) = list(spool.iterdir())
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stream.read(100).startswith(b"SQLite format 3\x00")
    stream.close()
    assert list(spool.iterdir()) == []
    stream = adapter.open_dump(adapter.database_unit(name))
    stream.abort()
    stream.abort()
    assert list(spool.iterdir()) == []


def test_connection_and_missing_file(folder: Path, fresh_database: Callable[[], str]) -> None:
    name = fresh_database()
    path = folder / f"{name}{SUFFIX}"
    load_awkward_file(path)
    before = (path.stat().st_mtime_ns, path.read_bytes())
    info = SQLiteAdapter(path).test_connection()
    assert info.engine == "sqlite" and info.server_version == sqlite3.sqlite_version
    assert info.details["journal_mode"] == "delete" and int(info.details["page_count"]) > 100
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before  # opened read-only
    assert SQLiteAdapter(path).list_databases() == [name]
    missing = folder / "nope.sqlite"
    with pytest.raises(NotFoundError, match=r"nope\.sqlite"):
        SQLiteAdapter(missing).test_connection()
    with pytest.raises(NotFoundError, match=r"nope\.sqlite"):
        SQLiteAdapter(missing).resolve_databases()
    with pytest.raises(NotFoundError, match="other"):
        SQLiteAdapter(path).open_dump(SQLiteAdapter(path).database_unit("other"))
    garbage = folder / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigurationError, match="not a readable SQLite database"):
        SQLiteAdapter(garbage).test_connection()


def test_restore_is_checked_and_atomic(
    folder: Path, fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    name = fresh_database()
    path = folder / f"{name}{SUFFIX}"
    load_awkward_file(path)
    adapter = SQLiteAdapter(path)
    dump = tmp_path / "dump.sqlite"
    dump_to_file(adapter, adapter.database_unit(name), dump)
    data = dump.read_bytes()
    target = fresh_database()
    target_path = folder / f"{target}{SUFFIX}"
    sqlite3.connect(target_path).execute("CREATE TABLE keep_me (x)").connection.close()
    original_target = target_path.read_bytes()
    corrupted = bytearray(data)
    for offset in range(4096 * 3, len(corrupted), 4096 * 7):
        corrupted[offset : offset + 64] = os.urandom(64)
    for bad in (data[: len(data) // 2], bytes(corrupted), b"not a database at all" * 50):
        with pytest.raises(RestoreFailedError):
            adapter.restore(adapter.database_unit(name), io.BytesIO(bad), target_database=target)
        assert target_path.read_bytes() == original_target  # untouched
    assert sorted(p.name for p in folder.iterdir()) == sorted([path.name, target_path.name])  # no temp left
    adapter.restore(adapter.database_unit(name), io.BytesIO(data), target_database=target)
    assert snapshot_file(target_path) == snapshot_file(path)
    # A path works as a target too.
    elsewhere = tmp_path / "elsewhere.db"
    adapter.restore(adapter.database_unit(name), io.BytesIO(data), target_database=str(elsewhere))
    assert snapshot_file(elsewhere) == snapshot_file(path)


def test_restore_refuses_a_target_with_an_open_journal(
    folder: Path, fresh_database: Callable[[], str]
) -> None:
    name = fresh_database()
    path = folder / f"{name}{SUFFIX}"
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    writer.commit()
    try:
        assert Path(f"{path}-wal").exists()
        adapter = SQLiteAdapter(path)
        with pytest.raises(RestoreFailedError, match="-wal"):
            adapter.restore(adapter.database_unit(name), io.BytesIO(b""), target_database=None)
    finally:
        writer.close()


def test_wal_source_copy_opens_without_its_wal(folder: Path, tmp_path: Path) -> None:
    path = folder / f"wal{SUFFIX}"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1000)])
    conn.commit()  # rows live in the -wal file, not yet in the main file
    try:
        copy = tmp_path / "copy.sqlite"
        adapter = SQLiteAdapter(path)
        dump_to_file(adapter, adapter.database_unit("wal"), copy)
        restored = tmp_path / "restored.sqlite"
        adapter.restore(adapter.database_unit("wal"), copy.open("rb"), target_database=str(restored))
        check = sqlite3.connect(restored)
        assert check.execute("SELECT count(*) FROM t").fetchone() == (1000,)
        check.close()
    finally:
        conn.close()


def test_block_builds_the_adapter(folder: Path, fresh_database: Callable[[], str]) -> None:
    from prefect_db_backup.blocks import SQLiteSource

    name = fresh_database()
    block = SQLiteSource(path=str(folder / f"{name}{SUFFIX}"))
    adapter = block.get_adapter()
    assert isinstance(adapter, SQLiteAdapter) and source_class("sqlite") is SQLiteAdapter
    assert adapter.describe() == block.describe() == f"sqlite://{folder / f'{name}{SUFFIX}'}"
    assert adapter.resolve_databases() == [name]
    with pytest.raises(ValueError, match="path"):
        SQLiteSource(path=str(folder / ".hidden.db"))


def test_awkward_path_characters(tmp_path: Path) -> None:
    folder = tmp_path / "we?ird #dir% 😀"
    folder.mkdir()
    path = folder / "app.db"
    load_awkward_file(path)
    adapter = SQLiteAdapter(path)
    assert adapter.test_connection().engine == "sqlite"
    copy = tmp_path / "copy.db"
    dump_to_file(adapter, adapter.database_unit("app"), copy)
    assert snapshot_file(copy) == snapshot_file(path)
    assert sorted(p.name for p in folder.iterdir()) == ["app.db"]  # no stray file from a misread URI
