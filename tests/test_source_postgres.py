# ruff: noqa: E501 - data tables and SQL read better unwrapped; the odd characters are the point
"""PostgresAdapter against the PostgreSQL 15 on 127.0.0.1:5432: the source conformance suite plus
PostgreSQL-specific rules (globals, version refusal, parallel dumps, passfile escaping)."""

from __future__ import annotations

import io
import os
import re
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.registry import source_class
from prefect_db_backup.adapters.source import DumpUnit
from prefect_db_backup.adapters.sources.postgres import (
    PostgresAdapter,
    conninfo_quote,
    major_version_num,
    parse_custom_header,
    passfile_line,
)
from prefect_db_backup.adapters.testing.source_suite import (
    SourceSuite,
    dump_to_file,
    live_members,
    restore_from_file,
    scanning,
)
from prefect_db_backup.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    DumpFailedError,
    NotFoundError,
    RestoreFailedError,
)
from servers import postgres as pg
from servers.postgres import load_awkward, snapshot, verify_restored

# -- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> None:
    require_infrastructure(pg.available(), "PostgreSQL on 127.0.0.1:5432 with pg_dump/pg_restore/psql")


@pytest.fixture
def fresh_database(server: None) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        created.append(pg.create_database())
        return created[-1]

    yield make
    for name in created:
        pg.drop_database(name)


@pytest.fixture(scope="module")
def scram(server: None) -> Iterator[tuple[str, str]]:
    with pg.scram_role() as role:
        yield role


class TestPostgresConformance(SourceSuite):
    @pytest.fixture(scope="class")
    def awkward_database(self, server: None) -> Iterator[str]:
        """Shared by the tests that only read it (round trips restore into a fresh database)."""
        name = pg.create_database("pdb_awkward")
        try:
            load_awkward(name)
            yield name
        finally:
            pg.drop_database(name)

    @pytest.fixture
    def source(self, server: None) -> PostgresAdapter:
        return PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, connect_timeout=5)

    @pytest.fixture
    def load_awkward_data(self) -> Callable[[str], None]:
        return load_awkward

    @pytest.fixture
    def snapshot(self) -> Callable[[str], Any]:
        return snapshot

    @pytest.fixture
    def verify_restored(self) -> Callable[[str, str], None]:
        return verify_restored

    @pytest.fixture
    def password_source(self, scram: tuple[str, str]) -> PostgresAdapter:
        role, password = scram
        return PostgresAdapter(pg.HOST, pg.PORT, role, password, connect_timeout=5)

    @pytest.fixture
    def wrong_password_source(self, scram: tuple[str, str]) -> PostgresAdapter:
        role, password = scram
        return PostgresAdapter(pg.HOST, pg.PORT, role, password + "-wrong", connect_timeout=5)

    @pytest.fixture
    def source_secrets(self, scram: tuple[str, str]) -> list[str]:
        return [scram[1], scram[1] + "-wrong"]

    @pytest.fixture
    def unreachable_source(self) -> Iterator[PostgresAdapter]:
        with pg.silent_server() as port:  # accepts TCP but never answers: only the timeout can end it
            yield PostgresAdapter(pg.HOST, port, "postgres", "secret", connect_timeout=2)


# -- PostgreSQL-specific rules ----------------------------------------------------------------------------------


@pytest.fixture
def source(server: None) -> PostgresAdapter:
    return PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, connect_timeout=5)


def test_registry_name() -> None:
    assert source_class("postgres") is PostgresAdapter


def test_connection_reports_versions(source: PostgresAdapter) -> None:
    info = source.test_connection()
    assert info.engine == "postgresql"
    assert info.server_version.startswith("15.")
    assert info.details["server_version_num"].startswith("15")
    assert info.client_version is not None and "pg_dump (PostgreSQL)" in info.client_version
    assert info.details["pg_dump_version"] == info.client_version


def test_pg_dump_older_than_the_server_is_refused(tmp_path: Path, server: None) -> None:
    fake = tmp_path / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.11'\n")
    fake.chmod(0o755)
    adapter = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, pg_dump_path=str(fake))
    with pytest.raises(
        ConfigurationError, match=r"pg_dump \(PostgreSQL\) 14\.11 cannot dump a PostgreSQL 15"
    ):
        adapter.test_connection()
    newer = tmp_path / "pg_dump17"
    newer.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 17.2'\n")
    newer.chmod(0o755)
    info = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, pg_dump_path=str(newer)).test_connection()
    assert info.client_version == "pg_dump (PostgreSQL) 17.2"


def test_refused_port_is_connection_failed(server: None) -> None:
    adapter = PostgresAdapter(pg.HOST, pg.free_port(), "postgres", None, connect_timeout=3)
    start = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="cannot reach"):
        adapter.test_connection()
    assert time.monotonic() - start < 5


def test_unknown_role_and_ssl_mismatch_are_permanent(server: None) -> None:
    with pytest.raises(AuthenticationError, match="no role 'pdb_nobody'"):
        PostgresAdapter(pg.HOST, pg.PORT, "pdb_nobody", None, connect_timeout=5).test_connection()
    with pytest.raises(ConfigurationError, match="sslmode=require"):
        PostgresAdapter(
            pg.HOST, pg.PORT, "postgres", None, sslmode="require", connect_timeout=5
        ).test_connection()


def test_system_and_template_databases(source: PostgresAdapter, fresh_database: Callable[[], str]) -> None:
    db = fresh_database()
    listed = source.list_databases()
    assert db in listed
    assert not {"postgres", "template0", "template1"} & set(listed)
    # The maintenance database is skipped by "all databases", but may be named explicitly.
    assert "postgres" not in source.resolve_databases()
    assert source.resolve_databases(["postgres", db]) == ["postgres", db]
    with pytest.raises(NotFoundError, match="template0"):
        source.resolve_databases(["template0"])  # does not allow connections


def test_awkward_names_reach_the_tools_intact(tmp_path: Path, source: PostgresAdapter, server: None) -> None:
    name = f"pdb odd=name 'q' \\ ü {os.urandom(3).hex()}"
    target = pg.create_database()
    with pg.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        with pg.connect(name) as conn:
            conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('in the odd database')")
        unit = source.database_unit(name)
        dump = tmp_path / "odd.dump"
        dump_to_file(source, unit, dump)
        assert parse_custom_header(dump.read_bytes()[:4096]).database == name
        restore_from_file(source, unit, dump, target)
        with pg.connect(target) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("in the odd database",)]
    finally:
        pg.drop_database(name)
        pg.drop_database(target)


def test_missing_database_dump_fails_with_stderr(source: PostgresAdapter) -> None:
    stream = source.open_dump(source.database_unit("pdb_missing_database_x"))
    with pytest.raises(DumpFailedError, match="does not exist") as info:
        stream.read()
        stream.close()
    assert "exit code" in str(info.value)


def test_dump_failure_scrubs_the_password(scram: tuple[str, str], server: None) -> None:
    role, password = scram
    adapter = PostgresAdapter(pg.HOST, pg.PORT, role, password, connect_timeout=5)
    with pytest.raises(DumpFailedError) as info, adapter.open_dump(adapter.database_unit("pdb_nope_db")) as s:
        s.read()
    assert password not in str(info.value)


def test_passfile_is_private_and_removed(
    scram: tuple[str, str], fresh_database: Callable[[], str], server: None
) -> None:
    role, password = scram
    db = fresh_database()
    adapter = PostgresAdapter(pg.HOST, pg.PORT, role, password, connect_timeout=5)
    stream = adapter.open_dump(adapter.database_unit(db))
    try:
        environ: list[bytes] = []
        for _ in range(100):  # right after fork the child still shows the parent's environment
            environ = Path(f"/proc/{stream.pid}/environ").read_bytes().split(b"\0")  # type: ignore[attr-defined]
            if any(e.startswith(b"PGPASSFILE=") for e in environ):
                break
            time.sleep(0.05)
        passfile = Path(next(e for e in environ if e.startswith(b"PGPASSFILE=")).split(b"=", 1)[1].decode())
        assert not any(password.encode() in entry for entry in environ)
        assert any(entry == b"PGAPPNAME=prefect-db-backup" for entry in environ)
        assert passfile.stat().st_mode & 0o777 == 0o600
        assert passfile.parent.stat().st_mode & 0o777 == 0o700
        stream.read()
        stream.close()
    finally:
        stream.abort()
    assert not passfile.exists() and not passfile.parent.exists()


def test_passfile_escaping() -> None:
    assert passfile_line("a:b\\c") == "*:*:*:*:a\\:b\\\\c\n"
    assert conninfo_quote("it's \\") == "'it\\'s \\\\'"


def test_wrong_password_during_dump_is_dump_failure(scram: tuple[str, str], server: None) -> None:
    role, password = scram
    adapter = PostgresAdapter(pg.HOST, pg.PORT, role, "not-" + password, connect_timeout=5)
    with (
        pytest.raises(DumpFailedError, match="password authentication failed") as info,
        adapter.open_dump(adapter.database_unit("postgres")) as stream,
    ):
        stream.read()
    assert password not in str(info.value)


def test_globals_round_trip(tmp_path: Path, server: None, scram: tuple[str, str]) -> None:
    role, _ = scram
    adapter = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, include_globals=True, connect_timeout=5)
    units = adapter.dump_units(["test"])
    assert [u.kind for u in units] == ["database", "globals"]
    globals_unit = units[1]
    assert (globals_unit.extension, globals_unit.database) == ("sql", None)
    path = tmp_path / "globals.sql"
    dump_to_file(adapter, globals_unit, path)
    text = path.read_text()
    assert f"CREATE ROLE {role};" in text and "SCRAM-SHA-256$" in text
    # The server is shared: replay only the statements about `postgres` and our own role, so that roles
    # other people create or drop meanwhile are never resurrected or altered by this test.
    role_statement = re.compile(
        r"^(CREATE|ALTER|COMMENT ON|GRANT|REVOKE|DROP|CREATE TABLESPACE|ALTER TABLESPACE)\b"
    )
    ours = [
        line
        for line in text.splitlines(keepends=True)
        if not role_statement.match(line)
        or role in line
        or line.startswith(("CREATE ROLE postgres;", "ALTER ROLE postgres WITH"))
    ]
    assert sum(line.startswith("CREATE ROLE ") for line in ours) == 2
    path.write_text("".join(ours))
    with pg.admin() as conn:
        conn.execute(f'ALTER ROLE "{role}" NOSUPERUSER')
    # Both roles exist already (postgres always does): the restore keeps them and reapplies attributes.
    restore_from_file(adapter, globals_unit, path, "postgres")
    with pg.admin() as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    assert row == (True,)


def test_globals_restore_failure_is_reported(server: None) -> None:
    adapter = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, include_globals=True, connect_timeout=5)
    unit = adapter.dump_units([])[0]
    with pytest.raises(RestoreFailedError, match="psql"):
        adapter.restore(unit, io.BytesIO(b"ALTER ROLE pdb_role_that_does_not_exist NOSUPERUSER;\n"))


def _custom_header(server_version: str) -> bytes:
    def put_int(value: int) -> bytes:
        return bytes([0]) + struct.pack("<i", value)

    def put_str(value: str) -> bytes:
        raw = value.encode()
        return put_int(len(raw)) + raw

    head = b"PGDMP" + bytes([1, 14, 0, 4, 8, 1]) + put_int(0)
    head += b"".join(put_int(v) for v in (0, 0, 0, 1, 0, 124, 0))
    return head + put_str("app") + put_str(server_version) + put_str(server_version)


def test_header_parser_reads_versions() -> None:
    header = parse_custom_header(_custom_header("17.2 (Debian 17.2-1)") + b"rest of the archive")
    assert (header.archive_version, header.database, header.server_version) == (
        "1.14",
        "app",
        "17.2 (Debian 17.2-1)",
    )
    assert major_version_num("9.6.24") == 90600
    assert major_version_num("16beta1") == 160000
    with pytest.raises(ValueError, match="PGDMP"):
        parse_custom_header(b"-- plain SQL")
    with pytest.raises(ValueError, match="truncated"):
        parse_custom_header(_custom_header("17.2")[:30])


def test_restore_refuses_a_dump_from_a_newer_major(
    source: PostgresAdapter, fresh_database: Callable[[], str]
) -> None:
    target = fresh_database()
    unit = source.database_unit("app")
    with pytest.raises(RestoreFailedError, match=r"PostgreSQL 17\.2.*older server \(PostgreSQL 15\)"):
        source.restore(unit, io.BytesIO(_custom_header("17.2") + b"\0" * 100), target_database=target)
    with pg.connect(target) as conn:  # nothing was written
        assert conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone() == (0,)


def test_restore_refuses_a_non_empty_target(
    tmp_path: Path, source: PostgresAdapter, fresh_database: Callable[[], str]
) -> None:
    original = fresh_database()
    with pg.connect(original) as conn:
        conn.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('new')")
    dump = tmp_path / "t.dump"
    dump_to_file(source, source.database_unit(original), dump)
    target = fresh_database()
    with pg.connect(target) as conn:
        conn.execute(
            "CREATE SCHEMA app; CREATE TABLE app.live (v text); INSERT INTO app.live VALUES ('precious')"
        )
    with pytest.raises(RestoreFailedError, match=r"not empty \(1 relation"):
        restore_from_file(source, source.database_unit(original), dump, target)
    only_lo = fresh_database()
    with pg.connect(only_lo) as conn:
        conn.execute("SELECT lo_from_bytea(0, 'x')")
    with pytest.raises(RestoreFailedError, match="1 large object"):
        restore_from_file(source, source.database_unit(original), dump, only_lo)
    with pg.connect(target) as conn:
        assert conn.execute("SELECT v FROM app.live").fetchall() == [("precious",)]
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)


def test_restore_of_garbage_is_refused(source: PostgresAdapter, fresh_database: Callable[[], str]) -> None:
    with pytest.raises(RestoreFailedError, match="PGDMP"):
        source.restore(source.database_unit("x"), io.BytesIO(b"not a dump"), target_database=fresh_database())


def test_restore_into_missing_database_fails(tmp_path: Path, source: PostgresAdapter) -> None:
    with pytest.raises(NotFoundError):
        source.restore(
            source.database_unit("x"), io.BytesIO(_custom_header("15.1")), target_database="pdb_nope_x"
        )


def test_truncated_dump_restore_fails(
    tmp_path: Path, source: PostgresAdapter, fresh_database: Callable[[], str]
) -> None:
    original = fresh_database()
    with pg.connect(original) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT g AS id, repeat('x', 1000) AS v FROM generate_series(1, 5000) g"
        )
    dump = tmp_path / "t.dump"
    dump_to_file(source, source.database_unit(original), dump)
    data = dump.read_bytes()
    with pytest.raises(RestoreFailedError, match="pg_restore"):
        source.restore(
            source.database_unit(original),
            io.BytesIO(data[: len(data) // 2]),
            target_database=fresh_database(),
        )


def test_parallel_directory_dump_round_trip(
    tmp_path: Path, server: None, fresh_database: Callable[[], str]
) -> None:
    original = fresh_database()
    load_awkward(original)
    spool = tmp_path / "spool"
    spool.mkdir()
    adapter = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, parallel_jobs=2, spool_dir=str(spool))
    unit = adapter.database_unit(original)
    assert (unit.extension, unit.format) == ("tar", "pg_dump directory (tar)")
    dump = tmp_path / "parallel.tar"
    dump_to_file(adapter, unit, dump)
    assert list(spool.iterdir()) == []  # the spool is removed once streamed
    restored = fresh_database()
    restore_from_file(adapter, unit, dump, restored)
    assert list(spool.iterdir()) == []
    assert snapshot(restored) == snapshot(original)
    verify_restored(original, restored)
    # A non-parallel source (as a restore tool might build it) recognises the tar by its bytes.
    plain_source = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None)
    again = fresh_database()
    restore_from_file(plain_source, plain_source.database_unit(original), dump, again)
    assert snapshot(again) == snapshot(original)


def test_parallel_dump_failure_and_abort(
    tmp_path: Path, server: None, fresh_database: Callable[[], str]
) -> None:
    adapter = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, parallel_jobs=2, spool_dir=str(tmp_path))
    stream = adapter.open_dump(adapter.database_unit("pdb_missing_parallel"))
    with pytest.raises(DumpFailedError, match="does not exist"):
        stream.read()
        stream.close()
    assert list(tmp_path.iterdir()) == []
    db = fresh_database()
    with pg.connect(db) as conn:
        conn.execute("CREATE TABLE t AS SELECT g, repeat('y', 2000) AS v FROM generate_series(1, 20000) g")
    stream = adapter.open_dump(adapter.database_unit(db))
    pid = stream.pid  # type: ignore[attr-defined]
    stream.abort()
    assert live_members(pid) == []
    assert list(tmp_path.iterdir()) == []


def test_blocks_build_the_adapter(scram: tuple[str, str]) -> None:
    from prefect_db_backup.blocks import PostgresSource

    role, password = scram
    block = PostgresSource(
        host=pg.HOST, user=role, password=password, databases=["test"], include_globals=True
    )
    adapter = block.get_adapter()
    assert isinstance(adapter, PostgresAdapter)
    assert adapter.describe() == block.describe() == f"postgres://{role}@127.0.0.1:5432"
    assert adapter.test_connection().engine == "postgresql"
    assert password not in repr(block) and password not in block.describe()
    assert [u.kind for u in adapter.dump_units(["test"])] == ["database", "globals"]
    with pytest.raises(ValueError, match=r"databases\[1\]"):
        PostgresSource(databases=["ok", "../etc"])
    with pytest.raises(ValueError, match=r"exclude_databases\[0\]"):
        PostgresSource(exclude_databases=["a/b"])


def test_wrong_password_through_block_names_source(scram: tuple[str, str]) -> None:
    from prefect_db_backup.blocks import PostgresSource

    role, password = scram
    block = PostgresSource(host=pg.HOST, user=role, password="wrong" + password)
    with pytest.raises(AuthenticationError, match=f"postgres://{role}@127.0.0.1:5432"):
        block.get_adapter().test_connection()


def test_no_secret_in_any_cmdline_during_globals_dump(scram: tuple[str, str]) -> None:
    role, password = scram
    adapter = PostgresAdapter(pg.HOST, pg.PORT, role, password, include_globals=True)
    with scanning([password]) as hits, adapter.open_dump(adapter.dump_units([])[0]) as stream:
        assert stream.read()
    assert hits == []


def test_bad_tool_path_is_configuration_error(source: PostgresAdapter) -> None:
    adapter = PostgresAdapter(pg.HOST, pg.PORT, "postgres", None, pg_dump_path="/nonexistent/pg_dump")
    with pytest.raises(ConfigurationError, match="pg_dump"):
        adapter.open_dump(adapter.database_unit("test"))


def test_dump_is_byte_identical_format(
    source: PostgresAdapter, fresh_database: Callable[[], str], tmp_path: Path
) -> None:
    """The stream is exactly what pg_dump writes: uncompressed custom format, readable by pg_restore -l."""
    import subprocess

    db = fresh_database()
    with pg.connect(db) as conn:
        conn.execute(
            "CREATE TABLE t (v text); INSERT INTO t SELECT repeat('abc', 1000) FROM generate_series(1, 50)"
        )
    dump = tmp_path / "x.dump"
    dump_to_file(source, DumpUnit(db, "database", "dump", db, "pg_dump custom"), dump)
    listing = subprocess.run(
        ["pg_restore", "-l", str(dump)], capture_output=True, text=True, check=True
    ).stdout
    assert "Compression: none" in listing or "Compression: 0" in listing
    assert "Dumped from database version: 15" in listing
    # uncompressed: the repeated text is visible as-is
    assert b"abcabcabcabc" in dump.read_bytes()
