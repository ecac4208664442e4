"""Helpers for tests against the machine's PostgreSQL (127.0.0.1:5432, trust, user postgres).

- :func:`available`: whether the server and the client tools are there.
- :func:`create_database` / :func:`drop_database`: uniquely named scratch databases.
- :func:`scram_role`: a login role with a password, enforced by a ``scram-sha-256`` rule put ahead of the
  trust rules in the cluster's (shared) ``pg_hba.conf``; the rule and the role are removed afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HOST = "127.0.0.1"
PORT = 5432
ADMIN = f"host={HOST} port={PORT} user=postgres dbname=postgres connect_timeout=5"
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
