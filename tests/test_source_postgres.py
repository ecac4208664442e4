# ruff: noqa: E501, RUF001 - data tables and SQL read better unwrapped; the odd characters are the point
"""PostgresAdapter against the PostgreSQL 15 on 127.0.0.1:5432: the source conformance suite plus
PostgreSQL-specific rules (globals, version refusal, parallel dumps, passfile escaping)."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import random
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

MiB = 1 << 20


# -- awkward data -------------------------------------------------------------------------------------------

AWKWARD_SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ünïcødé 😀');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE SEQUENCE odd_seq START 100 INCREMENT 7;
CREATE TABLE kinds (
    id integer PRIMARY KEY,
    i integer, b bigint, s smallint,
    n numeric, n_exact numeric(60, 30),
    f double precision, r real,
    t text, vc varchar(20), ch char(5),
    ba bytea,
    j json, jb jsonb,
    ia integer[], ta text[], ma integer[][],
    u uuid, ts timestamptz, tsn timestamp, d date, tm time, iv interval,
    ip inet, net cidr, mac macaddr,
    m mood, pi positive_int,
    flag boolean, rng int4range, pt point,
    doubled bigint GENERATED ALWAYS AS (i::bigint * 2) STORED,
    seq_default bigint DEFAULT nextval('odd_seq')
);
CREATE TABLE big (id serial PRIMARY KEY, t text, b bytea);
CREATE TABLE audit (id bigserial PRIMARY KEY, kind_id integer, note text);
CREATE FUNCTION add_tax(numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT round($1 * 1.2, 2) $$;
CREATE FUNCTION audit_kind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit (kind_id, note) VALUES (NEW.id, 'inserted ' || NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER kinds_audit AFTER INSERT ON kinds FOR EACH ROW EXECUTE FUNCTION audit_kind();
CREATE VIEW kinds_view AS SELECT id, t, add_tax(n_exact) AS taxed FROM kinds WHERE t IS NOT NULL;
CREATE INDEX kinds_t_idx ON kinds (t);
COMMENT ON TABLE kinds IS 'every type, with ''quotes'' and ünïcødé';
"""

KINDS_INSERT = r"""
INSERT INTO kinds (id, i, b, s, n, n_exact, f, r, t, vc, ch, ba, j, jb, ia, ta, ma, u, ts, tsn, d, tm, iv,
                   ip, net, mac, m, pi, flag, rng, pt)
VALUES (%(id)s, %(i)s, %(b)s, %(s)s, %(n)s::numeric, %(n_exact)s::numeric, %(f)s::float8, %(r)s::real,
        %(t)s, %(vc)s, %(ch)s, %(ba)s, %(j)s::json, %(jb)s::jsonb, %(ia)s::int[], %(ta)s::text[],
        %(ma)s::int[][], %(u)s::uuid, %(ts)s::timestamptz, %(tsn)s::timestamp, %(d)s::date, %(tm)s::time,
        %(iv)s::interval, %(ip)s::inet, %(net)s::cidr, %(mac)s::macaddr, %(m)s::mood, %(pi)s,
        %(flag)s, %(rng)s::int4range, %(pt)s::point)
"""

CONTROL_CHARS = "".join(chr(c) for c in range(1, 32)) + "\x7f"
ALL_BYTES = bytes(range(256))


def _kinds_rows() -> list[dict[str, Any]]:
    nulls: dict[str, Any] = {
        key: None
        for key in (
            ["i", "b", "s", "n", "n_exact", "f", "r", "t", "vc", "ch", "ba", "j", "jb", "ia", "ta", "ma", "u", "ts", "tsn", "d", "tm", "iv", "ip", "net", "mac", "m", "pi", "flag", "rng", "pt"]
        )
    }
    rows = [
        {
            "id": 1,
            "i": 2**31 - 1,
            "b": -(2**63),
            "s": -32768,
            "n": "1" + "0" * 120 + "." + "0" * 50 + "1",
            "n_exact": "-123456789012345678901234567890.123456789012345678901234567890",
            "f": "NaN",
            "r": "Infinity",
            "t": "Ünïcödé 😀🧪 𝔘 — \u200b zero-width, RTL \u202e text, ctrl:" + CONTROL_CHARS,
            "vc": "ok'quote\"double\\back",
            "ch": "ab",
            "ba": ALL_BYTES,
            "j": '{"b": 1, "a": [1, 2.50, null], "a": "duplicate keys kept"}',
            "jb": '{"nested": {"emoji": "😀", "num": 1e300, "deep": [[[]]]}, "nul_escape": "\\u0001"}',
            "ia": "{1,NULL,-3}",
            "ta": '{"a,b","\\"q\\"",NULL,"NULL",""}',
            "ma": "{{1,2},{3,4}}",
            "u": "00000000-0000-0000-0000-000000000000",
            "ts": "2024-02-29 23:59:59.999999+14",
            "tsn": "infinity",
            "d": "4713-01-01 BC",
            "tm": "24:00:00",
            "iv": "-178000000 years 1 mon -2 days 00:00:00.000001",
            "ip": "2001:db8::1/64",
            "net": "10.0.0.0/8",
            "mac": "08:00:2b:01:02:03",
            "m": "ünïcødé 😀",
            "pi": 1,
            "flag": True,
            "rng": "[1,10)",
            "pt": "(1.5,-2.25)",
        },
        {
            "id": 2,
            "i": -(2**31),
            "b": 2**63 - 1,
            "s": 32767,
            "n": "NaN",
            "n_exact": "0.000000000000000000000000000001",
            "f": "-Infinity",
            "r": "-0",
            "t": "",
            "vc": "",
            "ch": "",
            "ba": b"",
            "j": "[]",
            "jb": "{}",
            "ia": "{}",
            "ta": "{}",
            "ma": "{}",
            "u": "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "ts": "-infinity",
            "tsn": "1970-01-01 00:00:00",
            "d": "infinity",
            "tm": "00:00:00",
            "iv": "0",
            "ip": "127.0.0.1",
            "net": "::/0",
            "mac": "ff:ff:ff:ff:ff:ff",
            "m": "sad",
            "pi": 2**31 - 1,
            "flag": False,
            "rng": "empty",
            "pt": "(0,0)",
        },
        {**nulls, "id": 3},
        {
            **nulls,
            "id": 4,
            "f": "1.7976931348623157e308",
            "r": "1.17549435e-38",
            "t": "\\N",
            "ba": b"\x00" * 17,
            "jb": '"just a string"',
            "n": "-0.5",
        },
    ]
    return rows


@functools.cache
def _big_text() -> str:
    rng = random.Random(11)
    alphabet = "abcdefghij ñ😀\n\t"
    return "".join(rng.choices(alphabet, k=3 * MiB))


def load_awkward(database: str) -> None:
    """Fill ``database`` with the awkward data set."""
    rng = random.Random(7)
    with pg.connect(database) as conn:
        conn.execute(AWKWARD_SCHEMA)
        for row in _kinds_rows():
            conn.execute(KINDS_INSERT, row)
        conn.execute("SELECT setval('odd_seq', 12345, true)")
        big_text = _big_text()
        big_bytes = rng.randbytes(3 * MiB)
        conn.execute("INSERT INTO big (t, b) VALUES (%s, %s), (NULL, NULL), ('', '')", (big_text, big_bytes))
        conn.execute("SELECT lo_from_bytea(0, %s)", (rng.randbytes(4 * MiB),))
        conn.execute("SELECT lo_from_bytea(0, '')")
        for number in range(50):
            conn.execute(
                f"CREATE TABLE many_{number:02d} (id integer PRIMARY KEY, v text NOT NULL, x numeric);"
                f"INSERT INTO many_{number:02d} SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, {number}) g"
            )
        conn.execute(
            "CREATE MATERIALIZED VIEW kinds_summary AS SELECT count(*) AS n, sum(i) AS total FROM kinds;"
            'CREATE SCHEMA "Odd Schema"; CREATE TABLE "Odd Schema"."Mixed Case" ("Id" int PRIMARY KEY);'
            'INSERT INTO "Odd Schema"."Mixed Case" VALUES (1), (2);'
        )


CATALOG_QUERIES = {
    "relations": """
        SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
        ORDER BY 1, 2""",
    "columns": """
        SELECT table_schema, table_name, column_name, data_type, udt_name, is_nullable, column_default,
               is_generated, generation_expression
        FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
        ORDER BY 1, 2, ordinal_position""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) ORDER BY 1, 2""",
    "indexes": "SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname NOT IN "
    "('pg_catalog', 'information_schema') ORDER BY 1, 2",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    "matviews": "SELECT matviewname, definition, ispopulated FROM pg_matviews ORDER BY 1",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1""",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
    "enums": "SELECT enumtypid::regtype::text, enumlabel FROM pg_enum ORDER BY 1, enumsortorder",
    "domains": """
        SELECT t.typname, pg_get_constraintdef(c.oid) FROM pg_type t JOIN pg_constraint c ON c.contypid = t.oid
        ORDER BY 1""",
    "sequences": "SELECT schemaname, sequencename, last_value, start_value, increment_by FROM pg_sequences ORDER BY 1, 2",
    "comments": """
        SELECT c.relname, d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
        WHERE d.classoid = 'pg_class'::regclass ORDER BY 1""",
    "large_objects": "SELECT oid::text, md5(lo_get(oid)), length(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid",
    "kinds_view": "SELECT * FROM kinds_view ORDER BY id",
    "function_call": "SELECT add_tax(100.005)::text WHERE EXISTS (SELECT FROM pg_proc WHERE proname = 'add_tax')",
}


def snapshot(database: str) -> dict[str, Any]:
    """Everything that must survive a round trip: catalog facts, every row (as text, hashed), large objects."""
    result: dict[str, Any] = {}
    with pg.connect(database) as conn:
        for name, query in CATALOG_QUERIES.items():
            try:
                result[name] = [tuple(map(str, row)) for row in conn.execute(query).fetchall()]
            except Exception as exc:  # a missing view or function is part of the snapshot
                result[name] = f"error: {type(exc).__name__}"
        tables = conn.execute(
            """SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               ORDER BY 1"""
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(
                f'SELECT md5(t::text), length(t::text) FROM {table} t ORDER BY t::text COLLATE "C"'
            ).fetchall()
            result[f"rows:{table}"] = rows
    return result


def verify_restored(original: str, restored: str) -> None:
    """Behaviour survives: the trigger fires, the sequence continues where it was, the domain still checks."""
    with pg.connect(restored) as conn:
        conn.execute("INSERT INTO kinds (id, i) VALUES (1000, 21)")
        row = conn.execute("SELECT doubled, seq_default FROM kinds WHERE id = 1000").fetchone()
        assert row is not None and row[0] == 42
        # odd_seq was at 12345 (called) with increment 7; the rows' defaults had consumed values before setval.
        assert row[1] == 12345 + 7
        audit = conn.execute("SELECT note FROM audit WHERE kind_id = 1000").fetchone()
        assert audit is not None and audit[0] == "inserted 1000"
        with pytest.raises(Exception, match="positive_int"):
            conn.execute("INSERT INTO kinds (id, pi) VALUES (1001, -1)")


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


def test_refused_port_is_connection_failed(server: None) -> None:
    adapter = PostgresAdapter(pg.HOST, pg.free_port(), "postgres", None, connect_timeout=3)
    start = time.monotonic()
    with pytest.raises(ConnectionFailedError, match="cannot reach"):
        adapter.test_connection()
    assert time.monotonic() - start < 5


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
        environ = Path(f"/proc/{stream.pid}/environ").read_bytes().split(b"\0")  # type: ignore[attr-defined]
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
    with pg.admin() as conn:
        conn.execute(f'ALTER ROLE "{role}" NOSUPERUSER')
    # Every role exists already (postgres always does): the restore keeps them and reapplies attributes.
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
    load_awkward(db)
    stream = adapter.open_dump(adapter.database_unit(db))
    stream.abort()
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
    assert hashlib.sha256(dump.read_bytes()).hexdigest()
