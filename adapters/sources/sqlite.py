"""SQLite source: a consistent online copy with SQLite's backup API, restored atomically.

Decisions (what callers may rely on):

- **One database per file.** :meth:`SQLiteAdapter.list_databases` returns the file's stem; the dump is the
  database file itself (extension ``sqlite``), openable with any SQLite tool.
- **Consistent while others write.** The copy is made with ``sqlite3.Connection.backup`` from a read-only
  connection. It first copies ``pages_per_step`` pages at a time, so writers are only blocked for one short
  step at a time; if other connections keep writing, SQLite restarts such a backup, so after
  ``max_restarts`` restarts (or ``step_budget`` seconds) it copies everything in one step (one read
  transaction: in WAL mode writers carry on, in rollback-journal mode they wait for that step). Either way
  the copy is a snapshot of one committed state.
- **The temporary-file exception.** The backup API needs a destination database, so the copy is written
  into a private folder (mode 0700, under ``spool_dir`` or the system temp folder) during
  :meth:`~SQLiteAdapter.open_dump`, streamed from there, and removed by ``close`` or ``abort``. This is the
  one full-size temporary file this source makes; it is never left behind.
- **Restore.** The stream is written to a temporary file beside the target, fsynced, checked with
  ``PRAGMA integrity_check``, and only then renamed over the target (then the folder is fsynced): a failed
  restore never leaves a half-written database. The target is the adapter's ``path``, or
  ``target_database``: a path (absolute, or containing a separator), or a bare name that becomes
  ``<name><suffix>`` in the folder of ``path``. An existing target is replaced; a target with a ``-wal`` or
  ``-journal`` file beside it is refused (a connection may be open, and replacing the file under it would
  corrupt it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from prefect_db_backup.adapters.source import DumpStream, DumpUnit, Source, SourceInfo
from prefect_db_backup.errors import (
    ConfigurationError,
    ConnectionFailedError,
    DumpFailedError,
    NotFoundError,
    RestoreFailedError,
)

_FORMAT = "sqlite database file"
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class _Restarted(Exception):
    """Raised from the progress callback to stop a step-wise backup that keeps restarting."""


def _uri(path: Path, mode: str) -> str:
    quoted = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode={mode}"


class _FileDumpStream(DumpStream):
    """Streams a finished copy from a private folder and removes the folder when done."""

    def __init__(self, directory: Path, file: Path) -> None:
        self._directory = directory
        self._handle: BinaryIO | None = file.open("rb")

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes of the copy."""
        if self._handle is None:
            raise ValueError("the dump stream is closed")
        return self._handle.read(size)

    def close(self) -> None:
        """Release the copy. The copy was complete before the stream was returned, so this never fails."""
        self._release()

    def abort(self) -> None:
        """Release the copy (idempotent)."""
        self._release()

    def _release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
        shutil.rmtree(self._directory, ignore_errors=True)


class SQLiteAdapter(Source):
    """One SQLite database file. See the module docstring for the decisions.

    Args:
        path: Path of the database file.
        pages_per_step: Pages copied per backup step (each step holds a read lock briefly).
        max_restarts: Restarts tolerated (because of concurrent writes) before copying in one step.
        step_budget: Seconds the step-wise copy may take before the rest is copied in one step.
        busy_timeout: Seconds to wait for a lock held by another connection.
        spool_dir: Parent folder for the private temporary copy (default: the system temp folder).
    """

    engine: ClassVar[str] = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pages_per_step: int = 4096,
        max_restarts: int = 3,
        step_budget: float = 5.0,
        busy_timeout: float = 30.0,
        spool_dir: str | None = None,
    ) -> None:
        if pages_per_step < 1:
            raise ConfigurationError("pages_per_step must be at least 1")
        self.path = Path(path).expanduser().absolute()
        self.pages_per_step = pages_per_step
        self.max_restarts = max_restarts
        self.step_budget = step_budget
        self.busy_timeout = busy_timeout
        self.spool_dir = spool_dir

    def describe(self) -> str:
        """``sqlite://<absolute path>``."""
        return f"sqlite://{self.path}"

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise NotFoundError(
                f"{self.describe()}: the database file {str(self.path)!r} does not exist",
                hint="check the path",
            )
        try:
            conn = sqlite3.connect(_uri(self.path, "ro"), uri=True, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"{self.describe()}: cannot open the database file: {exc}") from exc
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.OperationalError as exc:
            conn.close()
            raise ConnectionFailedError(f"{self.describe()}: cannot read the database: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigurationError(f"{self.describe()}: not a readable SQLite database: {exc}") from exc
        return conn

    def test_connection(self) -> SourceInfo:
        """Open the file read-only and report the SQLite version and a few facts.

        Raises:
            NotFoundError: The file does not exist.
            ConfigurationError: The file is not a SQLite database.
        """
        conn = self._open_readonly()
        try:
            version = str(conn.execute("SELECT sqlite_version()").fetchone()[0])
            details = {
                "page_size": str(conn.execute("PRAGMA page_size").fetchone()[0]),
                "page_count": str(conn.execute("PRAGMA page_count").fetchone()[0]),
                "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
            }
        finally:
            conn.close()
        return SourceInfo(
            engine="sqlite",
            server_version=version,
            client_version=f"python sqlite3 {sqlite3.sqlite_version}",
            details=details,
        )

    def list_databases(self) -> list[str]:
        """The file's stem (the one database), if the file exists.

        Raises:
            NotFoundError: The file does not exist.
        """
        if not self.path.is_file():
            raise NotFoundError(f"{self.describe()}: the database file {str(self.path)!r} does not exist")
        return [self.path.stem]

    def database_unit(self, database: str) -> DumpUnit:
        """The database file as one unit."""
        return DumpUnit(name=database, kind="database", extension="sqlite", database=database, format=_FORMAT)

    def open_dump(self, unit: DumpUnit) -> DumpStream:
        """Copy the database with the backup API into a private folder and stream the copy.

        Raises:
            NotFoundError: The unit names another database, or the file does not exist.
            DumpFailedError: The backup failed.
        """
        if unit.database != self.path.stem:
            raise NotFoundError(
                f"{self.describe()}: database {unit.database!r} not found",
                hint=f"available: {self.path.stem}",
            )
        source = self._open_readonly()
        source.execute("PRAGMA busy_timeout = 0")  # see _backup
        directory = Path(tempfile.mkdtemp(prefix="pdb-sqlite-", dir=self.spool_dir))
        try:
            copy = directory / "copy.sqlite"
            target = sqlite3.connect(copy)
            try:
                self._backup(source, target)
            finally:
                target.close()
            for leftover in ("-wal", "-shm", "-journal"):
                if Path(f"{copy}{leftover}").exists():
                    raise DumpFailedError(f"{self.describe()}: the copy left a {leftover} file behind")
            return _FileDumpStream(directory, copy)
        except sqlite3.Error as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise DumpFailedError(f"{self.describe()}: backup failed: {exc}") from exc
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            source.close()

    def _backup(self, source: sqlite3.Connection, target: sqlite3.Connection) -> None:
        # The source connection has no busy handler (timeout 0): a busy step returns at once and the
        # progress callback below decides, so the budgets are kept even under constant writes.
        restarts = 0
        last_remaining: int | None = None
        deadline = time.monotonic() + self.step_budget

        def stepwise(status: int, remaining: int, total: int) -> None:
            nonlocal restarts, last_remaining
            if last_remaining is not None and remaining > last_remaining:
                restarts += 1
            last_remaining = remaining
            if restarts > self.max_restarts or time.monotonic() > deadline:
                raise _Restarted

        try:
            source.backup(target, pages=self.pages_per_step, progress=stepwise, sleep=0.01)
            return
        except _Restarted:
            pass
        # Concurrent writers keep restarting (or blocking) the step-wise copy: take one consistent snapshot
        # in a single step, which holds one read transaction for the whole copy.
        busy_deadline = time.monotonic() + self.busy_timeout

        def single(status: int, remaining: int, total: int) -> None:
            if status in _BUSY_CODES and time.monotonic() > busy_deadline:
                raise DumpFailedError(
                    f"{self.describe()}: the database stayed locked by other connections for "
                    f"{self.busy_timeout:g} s",
                    hint="retry later, or raise busy_timeout",
                )

        source.backup(target, pages=-1, progress=single, sleep=0.01)

    def _target_path(self, target_database: str | None) -> Path:
        if target_database is None:
            return self.path
        if os.sep in target_database or (os.altsep and os.altsep in target_database):
            return Path(target_database).expanduser().absolute()
        return self.path.with_name(f"{target_database}{self.path.suffix}")

    def restore(self, unit: DumpUnit, stream: BinaryIO, *, target_database: str | None = None) -> None:
        """Write the copy beside the target, check it, then atomically replace the target.

        Raises:
            RestoreFailedError: The copy fails ``PRAGMA integrity_check``, the target has an open journal,
                or writing fails.
        """
        target = self._target_path(target_database)
        for suffix in ("-wal", "-journal"):
            if Path(f"{target}{suffix}").exists():
                raise RestoreFailedError(
                    f"{self.describe()}: refusing to replace {str(target)!r}: a {suffix} file exists beside "
                    "it, so a connection may be open",
                    hint="stop the application using the database, then restore again",
                )
        if not target.parent.is_dir():
            raise RestoreFailedError(f"{self.describe()}: the folder {str(target.parent)!r} does not exist")
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restore", dir=target.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                while chunk := stream.read(1 << 20):
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            self._check_integrity(temp)
            os.replace(temp, target)
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise RestoreFailedError(f"{self.describe()}: cannot write {str(target)!r}: {exc}") from exc
        finally:
            for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm"), Path(f"{temp}-journal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    def _check_integrity(self, path: Path) -> None:
        try:
            conn = sqlite3.connect(path)
            try:
                rows: list[Any] = conn.execute("PRAGMA integrity_check").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise RestoreFailedError(
                f"{self.describe()}: the restored file is not a valid database: {exc}"
            ) from exc
        if [str(row[0]) for row in rows] != ["ok"]:
            problems = "; ".join(str(row[0]) for row in rows[:5])
            raise RestoreFailedError(
                f"{self.describe()}: the restored database fails integrity_check: {problems}"
            )
