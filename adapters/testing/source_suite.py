# ruff: noqa: D102 - each test method is named for the rule it checks
"""The source conformance suite: one set of tests that every :class:`Source` must pass against a real server.

An engine wires it in with one test class that provides fixtures (all function-scoped unless noted)::

    import pytest
    from prefect_db_backup.adapters.testing.source_suite import SourceSuite

    class TestPostgres(SourceSuite):
        @pytest.fixture
        def source(self): ...               # a Source that can create/read the fresh databases
        @pytest.fixture
        def fresh_database(self): ...       # factory: () -> name of a new, empty, uniquely named database,
                                            # dropped when the test ends
        @pytest.fixture
        def load_awkward_data(self): ...    # (database) -> None: fill it with the engine's awkward data
        @pytest.fixture
        def snapshot(self): ...             # (database) -> comparable value of everything that must survive
        @pytest.fixture
        def wrong_password_source(self): ...  # a Source whose server refuses its password
        @pytest.fixture
        def unreachable_source(self): ...   # a Source whose server cannot be reached
        @pytest.fixture
        def password_source(self): ...      # a Source that logs in WITH a password and can dump
        @pytest.fixture
        def source_secrets(self): ...       # secrets (passwords) that must never show up anywhere

Optional fixtures with defaults:

- ``source_for``: ``(database) -> Source`` used to dump and restore ``database`` (default: ``source``).
  File-based engines (SQLite) return a source bound to that database's file.
- ``verify_restored``: ``(original, restored) -> None``, engine-specific behavioural checks of a restored
  database (triggers fire, functions answer, sequences continue); default does nothing.

Rules that do not apply to an engine are switched off by setting the test to ``None`` in the subclass
(pytest collects only callables), with a comment saying why, for example ``test_wrong_password = None  #
SQLite has no credentials``. Nothing in this suite skips: missing infrastructure shows up in the engine's
own fixtures (through ``require_infrastructure``, which fails under CI).

The helpers :func:`dump_to_file` and :func:`restore_from_file` are public so flow-level tests can reuse the
same fixtures: fill a database with ``load_awkward_data``, back it up through the flow, restore the stored
file into another ``fresh_database`` and compare ``snapshot``s.

The suite needs pytest, which is a test dependency only; importing this module without pytest fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect_db_backup.adapters.source import DumpStream, DumpUnit, Source
from prefect_db_backup.errors import (
    AuthenticationError,
    ConnectionFailedError,
    DumpFailedError,
    NotFoundError,
    is_retryable,
)

#: Longest time a wrong password may take to be refused (no retry storm).
AUTH_FAILURE_SECONDS = 10.0
#: Longest time an unreachable server may take to be reported.
UNREACHABLE_SECONDS = 15.0
#: Longest time ``abort`` or ``close`` of a killed dump may take.
STOP_SECONDS = 30.0
CHUNK = 1 << 16
#: Bytes read between two scans of /proc while a dump runs.
SCAN_EVERY = 1 << 20


def dump_to_file(source: Source, unit: DumpUnit, path: Path) -> int:
    """Dump ``unit`` into ``path`` (read to the end, then ``close``). Returns the byte count."""
    size = 0
    with source.open_dump(unit) as stream, path.open("wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
            size += len(chunk)
    return size


def restore_from_file(source: Source, unit: DumpUnit, path: Path, target_database: str) -> None:
    """Restore the plain dump in ``path`` into ``target_database``."""
    with path.open("rb") as handle:
        source.restore(unit, handle, target_database=target_database)


def process_group(pid: int) -> int | None:
    """The process group of ``pid`` (from ``/proc/<pid>/stat``); None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[2])


def live_members(pgid: int) -> list[int]:
    """Every live (non-zombie) process in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and process_group(int(entry)) == pgid:
            members.append(int(entry))
    return members


def children_of(pid: int) -> set[int]:
    """Live direct children of ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def cmdlines_containing(secrets: list[str]) -> list[tuple[int, str]]:
    """Processes whose ``/proc/<pid>/cmdline`` contains any of ``secrets`` (pid, redacted command name)."""
    needles = [s.encode() for s in secrets if s]
    hits = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            hits.append((int(entry), cmdline.split(b"\0", 1)[0].decode(errors="replace")))
    return hits


def _stream_pid(stream: DumpStream) -> int | None:
    pid = getattr(stream, "pid", None)
    return pid if isinstance(pid, int) else None


class SourceSuite:
    """Conformance tests for a :class:`Source`. See the module docstring for the fixtures to provide."""

    # -- optional fixtures with defaults ------------------------------------------------------------------

    @pytest.fixture
    def source_for(self, source: Source) -> Callable[[str], Source]:
        return lambda database: source

    @pytest.fixture
    def verify_restored(self) -> Callable[[str, str], None]:
        return lambda original, restored: None

    @pytest.fixture
    def source_secrets(self) -> list[str]:
        return []

    @pytest.fixture
    def awkward_database(
        self, fresh_database: Callable[[], str], load_awkward_data: Callable[[str], None]
    ) -> str:
        """A database filled with awkward data.

        Tests only read it, so engines may override it with a class-scoped one to load it once.
        """
        database = fresh_database()
        load_awkward_data(database)
        return database

    # -- round trip -----------------------------------------------------------------------------------------

    def test_awkward_data_round_trip_into_another_name(
        self,
        tmp_path: Path,
        source_for: Callable[[str], Source],
        awkward_database: str,
        fresh_database: Callable[[], str],
        snapshot: Callable[[str], Any],
        verify_restored: Callable[[str, str], None],
    ) -> None:
        original = awkward_database
        source = source_for(original)
        units = [u for u in source.dump_units([original]) if u.kind == "database"]
        assert [u.database for u in units] == [original]
        unit = units[0]
        assert unit.extension and "/" not in unit.extension and not unit.extension.startswith(".")
        dump = tmp_path / f"dump.{unit.extension}"
        assert dump_to_file(source, unit, dump) > 0
        restored = fresh_database()
        assert restored != original
        restore_from_file(source, unit, dump, restored)
        expected = snapshot(original)
        assert expected, "the snapshot of the awkward database is empty: the loader or snapshot is broken"
        assert snapshot(restored) == expected
        verify_restored(original, restored)

    def test_dump_of_empty_database_restores(
        self,
        tmp_path: Path,
        source_for: Callable[[str], Source],
        fresh_database: Callable[[], str],
        snapshot: Callable[[str], Any],
    ) -> None:
        original = fresh_database()
        source = source_for(original)
        unit = source.database_unit(original)
        dump = tmp_path / "empty.dump"
        dump_to_file(source, unit, dump)
        restored = fresh_database()
        restore_from_file(source, unit, dump, restored)
        assert snapshot(restored) == snapshot(original)

    # -- selection ------------------------------------------------------------------------------------------

    def test_selection_and_missing_database(
        self, source_for: Callable[[str], Source], fresh_database: Callable[[], str]
    ) -> None:
        database = fresh_database()
        source = source_for(database)
        assert database in source.list_databases()
        assert not set(source.list_databases()) & source.system_databases
        assert database in source.resolve_databases()
        assert source.resolve_databases([database]) == [database]
        assert source.resolve_databases([database], [database]) == []
        assert database not in source.resolve_databases((), [database])
        assert not set(source.resolve_databases()) & source.system_databases
        missing = f"pdb_missing_{uuid.uuid4().hex[:10]}"
        with pytest.raises(NotFoundError) as info:
            source.resolve_databases([database, missing])
        assert missing in str(info.value)
        assert source.describe() in str(info.value)
        assert not is_retryable(info.value)

    # -- credentials and reachability ------------------------------------------------------------------------

    def test_wrong_password_is_permanent_and_quick(
        self, wrong_password_source: Source, source_secrets: list[str]
    ) -> None:
        start = time.monotonic()
        with pytest.raises(AuthenticationError) as info:
            wrong_password_source.test_connection()
        elapsed = time.monotonic() - start
        assert elapsed < AUTH_FAILURE_SECONDS, f"refusing a wrong password took {elapsed:.1f} s"
        assert not is_retryable(info.value)
        message = str(info.value)
        assert wrong_password_source.describe() in message
        for secret in source_secrets:
            assert secret not in message
            assert secret not in repr(info.value)

    def test_unreachable_server_fails_in_bounded_time(self, unreachable_source: Source) -> None:
        start = time.monotonic()
        with pytest.raises(ConnectionFailedError) as info:
            unreachable_source.test_connection()
        elapsed = time.monotonic() - start
        assert elapsed < UNREACHABLE_SECONDS, f"reporting an unreachable server took {elapsed:.1f} s"
        assert is_retryable(info.value)
        assert unreachable_source.describe() in str(info.value)

    def test_describe_has_no_secret(
        self, source: Source, password_source: Source, source_secrets: list[str]
    ) -> None:
        assert source_secrets, "password_source needs a secret to check"
        for candidate in (source, password_source):
            text = candidate.describe()
            assert text
            for secret in source_secrets:
                assert secret not in text
                assert secret not in repr(candidate)

    def test_password_never_in_process_arguments(
        self,
        password_source: Source,
        source_for: Callable[[str], Source],
        awkward_database: str,
        source_secrets: list[str],
    ) -> None:
        assert source_secrets
        unit = password_source.database_unit(awkward_database)
        scans = 0
        hits: list[tuple[int, str]] = []
        saw_child = False
        before = children_of(os.getpid())
        with password_source.open_dump(unit) as stream:
            unscanned = SCAN_EVERY
            while True:
                if unscanned >= SCAN_EVERY:
                    hits += cmdlines_containing(source_secrets)
                    scans += 1
                    unscanned = 0
                    if children_of(os.getpid()) - before:
                        saw_child = True
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                unscanned += len(chunk)
        hits += cmdlines_containing(source_secrets)
        assert scans >= 2
        assert not hits, f"secret found in the arguments of {hits}"
        pid = _stream_pid(stream)
        if pid is not None:
            assert saw_child, "the dump's child process was never seen while scanning"

    # -- failure and cancellation ------------------------------------------------------------------------

    def test_killed_dump_fails_on_close(
        self, source_for: Callable[[str], Source], awkward_database: str
    ) -> None:
        source = source_for(awkward_database)
        stream = source.open_dump(source.database_unit(awkward_database))
        try:
            pid = _stream_pid(stream)
            assert pid is not None, "this rule needs a dump stream with a child pid; set the test to None"
            assert stream.read(CHUNK)
            os.killpg(pid, signal.SIGKILL)
            start = time.monotonic()
            with pytest.raises(DumpFailedError):
                while stream.read(1 << 20):
                    pass
                stream.close()
            assert time.monotonic() - start < STOP_SECONDS
        finally:
            stream.abort()
        assert live_members(pid) == []

    def test_abort_half_way_ends_everything(
        self, source_for: Callable[[str], Source], awkward_database: str
    ) -> None:
        source = source_for(awkward_database)
        before = children_of(os.getpid())
        stream = source.open_dump(source.database_unit(awkward_database))
        pid = _stream_pid(stream)
        assert stream.read(CHUNK)
        if pid is not None:
            assert live_members(pid), "the dump finished before it could be aborted; use more data"
        start = time.monotonic()
        stream.abort()
        assert time.monotonic() - start < STOP_SECONDS
        stream.abort()  # idempotent
        if pid is not None:
            assert live_members(pid) == [], "abort left members of the dump's process group running"
        assert children_of(os.getpid()) - before == set(), "abort left child processes behind"
        with contextlib.suppress(Exception):
            stream.close()  # after abort, close must not hang (it may raise or do nothing)

    def test_context_manager_aborts_on_error(
        self, source_for: Callable[[str], Source], awkward_database: str
    ) -> None:
        source = source_for(awkward_database)
        before = children_of(os.getpid())

        class Stop(Exception):
            pass

        with pytest.raises(Stop), source.open_dump(source.database_unit(awkward_database)) as stream:
            stream.read(CHUNK)
            raise Stop
        assert children_of(os.getpid()) - before == set()


@contextlib.contextmanager
def scanning(secrets: list[str], interval: float = 0.05) -> Iterator[list[tuple[int, str]]]:
    """Scan ``/proc/*/cmdline`` for ``secrets`` on a thread while the block runs; yields the hits list.

    For flow-level tests: wrap a whole backup run in ``with scanning([password]) as hits:`` and assert
    ``hits == []`` afterwards.
    """
    hits: list[tuple[int, str]] = []
    stop = threading.Event()

    def scan() -> None:
        while not stop.is_set():
            hits.extend(cmdlines_containing(secrets))
            stop.wait(interval)

    thread = threading.Thread(target=scan, name="cmdline-scan", daemon=True)
    thread.start()
    try:
        yield hits
    finally:
        stop.set()
        thread.join()
