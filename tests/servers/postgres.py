# ruff: noqa: E501, RUF001 - data tables and SQL read better unwrapped; the odd characters are the point
"""Helpers for tests against the machine's PostgreSQL (127.0.0.1:5432, trust, user postgres).

- :func:`available`: whether the server and the client tools are there.
- :func:`create_database` / :func:`drop_database`: uniquely named scratch databases.
- :func:`scram_role`: a login role with a password, enforced by a ``scram-sha-256`` rule put ahead of the
  trust rules in the cluster's (shared) ``pg_hba.conf``; the rule and the role are removed afterwards.
- :func:`load_awkward`, :func:`snapshot`, :func:`verify_restored`: the awkward data set of the source
  conformance suite, reusable by flow-level tests (fill, back up, restore elsewhere, compare snapshots).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import random
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

HOST = "127.0.0.1"
PORT = 5432
ADMIN = f"host={HOST} port={PORT} user=postgres dbname=postgres connect_timeout=5"
MiB = 1 << 20
TOOLS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")


def available() -> bool:
    """True when the server answers and every client tool is on PATH."""
    if any(shutil.which(tool) is None for tool in TOOLS):
        return False
    try:
        psycopg.connect(ADMIN).close()
    except psycopg.Error:
        return False
    return True


def admin() -> psycopg.Connection[Any]:
    """An autocommit superuser connection to the ``postgres`` database."""
    return psycopg.connect(ADMIN, autocommit=True)


def connect(database: str) -> psycopg.Connection[Any]:
    """An autocommit superuser connection to ``database``."""
    return psycopg.connect(host=HOST, port=PORT, user="postgres", dbname=database, autocommit=True)


def create_database(prefix: str = "pdb_test") -> str:
    """Create an empty database named ``<prefix>_<random>`` from template0 and return its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    return name


def drop_database(name: str) -> None:
    """Drop ``name`` if it exists, ending its sessions first."""
    with admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers: a hung server."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def _hba_file() -> Path:
    with admin() as conn:
        row = conn.execute("SHOW hba_file").fetchone()
    assert row is not None
    return Path(str(row[0]))


def _edit_hba(path: Path, edit: Any) -> None:
    """Read-modify-write ``pg_hba.conf`` under an exclusive lock, keeping its mode and owner."""
    with path.open("r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            lines = handle.read().splitlines(keepends=True)
            new = edit(lines)
            handle.seek(0)
            handle.write("".join(new))
            handle.truncate()
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reload() -> None:
    with admin() as conn:
        conn.execute("SELECT pg_reload_conf()")


def _password_enforced(role: str, database: str) -> bool:
    try:
        psycopg.connect(
            host=HOST, port=PORT, user=role, password="definitely-not-it", dbname=database, connect_timeout=3
        ).close()
    except psycopg.OperationalError as exc:
        return "password authentication failed" in str(exc)
    return False


@contextlib.contextmanager
def scram_role(superuser: bool = True) -> Iterator[tuple[str, str]]:
    """Create a login role with a random password and a scram rule for it ahead of the trust rules.

    Yields:
        ``(role, password)``. The password contains characters that need escaping in a passfile.
    """
    role = f"pdb_scram_{uuid.uuid4().hex[:10]}"
    password = f"pw:{secrets.token_urlsafe(12)}\\x y'z"
    marker = f"# prefect-db-backup test {role}"
    rule = f"host all {role} {HOST}/32 scram-sha-256 {marker}\n"
    hba = _hba_file()
    with admin() as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        attrs = "LOGIN SUPERUSER" if superuser else "LOGIN"
        conn.execute(
            sql.SQL("CREATE ROLE {} " + attrs + " PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        _edit_hba(hba, lambda lines: [rule, *lines])
        _reload()
        deadline = time.monotonic() + 10
        while not _password_enforced(role, "postgres"):
            if time.monotonic() > deadline:
                raise RuntimeError("the scram rule did not take effect after a reload")
            time.sleep(0.1)
        yield role, password
    finally:
        _edit_hba(hba, lambda lines: [line for line in lines if marker not in line])
        _reload()
        with admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


# -- awkward data (shared with flow-level tests) -------------------------------------------------------------------------------------------

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
            [
                "i",
                "b",
                "s",
                "n",
                "n_exact",
                "f",
                "r",
                "t",
                "vc",
                "ch",
                "ba",
                "j",
                "jb",
                "ia",
                "ta",
                "ma",
                "u",
                "ts",
                "tsn",
                "d",
                "tm",
                "iv",
                "ip",
                "net",
                "mac",
                "m",
                "pi",
                "flag",
                "rng",
                "pt",
            ]
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
    with connect(database) as conn:
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
    with connect(database) as conn:
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
    with connect(restored) as conn:
        conn.execute("INSERT INTO kinds (id, i) VALUES (1000, 21)")
        row = conn.execute("SELECT doubled, seq_default FROM kinds WHERE id = 1000").fetchone()
        assert row is not None and row[0] == 42
        # odd_seq was at 12345 (called) with increment 7; the rows' defaults had consumed values before setval.
        assert row[1] == 12345 + 7
        audit = conn.execute("SELECT note FROM audit WHERE kind_id = 1000").fetchone()
        assert audit is not None and audit[0] == "inserted 1000"
        with pytest.raises(Exception, match="positive_int"):
            conn.execute("INSERT INTO kinds (id, pi) VALUES (1001, -1)")
