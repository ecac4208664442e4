"""Build (or reuse) PostgreSQL benchmark databases of a known size: pgbench tables plus a mixed table."""

from __future__ import annotations

import subprocess

import psycopg

DSN = "host=127.0.0.1 port=5432 user=postgres"

MIXED_TABLE = """CREATE TABLE bench_mixed (
    id bigint PRIMARY KEY,
    uid uuid NOT NULL,
    created timestamptz NOT NULL,
    doc jsonb NOT NULL,
    body text NOT NULL
)"""

MIXED_ROWS = """INSERT INTO bench_mixed
SELECT g, md5(g::text)::uuid, now() - g * interval '1 second',
       jsonb_build_object('n', g, 'tag', 'item-' || (g % 977), 'price', (g % 10000) / 100.0,
                          'flags', jsonb_build_array(g % 2 = 0, g % 3 = 0)),
       repeat(md5((g * 7)::text), 4) || ' ' || to_char(g, 'FM999999999')
FROM generate_series(1, {rows}) AS g
"""


def ensure_database(name: str, scale: int, mixed_rows: int) -> None:
    """Create database ``name`` with pgbench tables at ``scale`` and ``mixed_rows`` mixed rows, unless a
    database of that name already holds exactly that content (checked by a marker comment)."""
    marker = f"bench scale={scale} mixed={mixed_rows}"
    with psycopg.connect(DSN + " dbname=postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if row is not None and row[0] == marker:
            return
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-i", "-q", "-s", str(scale), name],
        check=True,
        capture_output=True,
    )
    with psycopg.connect(DSN + f" dbname={name}", autocommit=True) as conn:
        conn.execute(MIXED_TABLE)
        conn.execute(MIXED_ROWS.format(rows=int(mixed_rows)).encode())
        conn.execute("VACUUM ANALYZE")
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")


def plain_dump_size(name: str) -> int:
    """Bytes of ``pg_dump -Fp`` output for the database (streamed, not stored)."""
    proc = subprocess.Popen(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fp", name], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
    if proc.wait() != 0:
        raise RuntimeError("pg_dump failed")
    return total
