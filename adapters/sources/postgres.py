"""PostgreSQL source: ``pg_dump`` custom-format dumps, ``pg_dumpall`` globals, ``pg_restore`` restores.

Decisions (what callers may rely on):

- **Databases.** :meth:`PostgresAdapter.list_databases` lists connectable, non-template databases except
  ``postgres``: that maintenance database is treated as a system database, so a backup of "all databases"
  skips it. Naming it explicitly in ``include`` does back it up (see :meth:`resolve_databases`).
- **Dump format.** One ``pg_dump --format=custom --compress=0`` per database (extension ``dump``): our
  pipeline compresses, so ``pg_dump`` does not. Server-wide objects (roles, tablespaces) come from
  ``pg_dumpall --globals-only`` as plain SQL (extension ``sql``) when ``include_globals`` is set; they
  include role password hashes, which is what a restore needs (the backup is meant to be encrypted).
- **Parallel dumps.** With ``parallel_jobs > 1`` a database is dumped with ``--format=directory --jobs N``
  into a private spool folder (``spool_dir``), which is then streamed as an uncompressed tar (extension
  ``tar``) and removed. This is the one documented exception to "no full-size temporary file": a parallel
  dump cannot be written to a pipe. Restoring such a dump untars it into a spool folder and runs
  ``pg_restore --jobs N``.
- **Secrets.** The password reaches every child through a private passfile (``PGPASSFILE``, mode 0600,
  removed afterwards), never ``argv``; children run with ``--no-password`` so they never prompt.
  Connection parameters are passed as a libpq connection string (``--dbname``) that holds no secret, so a
  database name containing ``=`` or quotes is never misread.
- **Restore.** ``pg_restore --exit-on-error`` into an existing, empty database (``target_database`` may
  name a database other than the dumped one); a target that already holds tables, views, sequences or
  large objects is refused before anything is written, so a restore never merges into live data.
  Ownership and privileges are restored as dumped by default (a faithful restore, after the globals unit
  recreated the roles); ``restore_no_owner=True`` adds ``--no-owner --no-privileges`` for a server that
  lacks the original roles. A failed restore can leave the target partly filled: drop it and retry.
  A dump from a newer major server version than the target is refused before anything is written: the
  version is read from the archive header (custom and directory formats; ``pg_dumpall --globals-only``
  records no version, so a globals script is only checked when it carries a ``Dumped from database
  version`` comment).
  Globals are restored with ``psql -v ON_ERROR_STOP=1``; each ``CREATE ROLE`` is wrapped so that a role
  that already exists (always the case for the restoring superuser) is kept and then altered to the dumped
  attributes, instead of stopping the restore.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import psycopg
from prefect_db_backup.adapters.process import (
    ProcessDumpStream,
    private_file,
    require_tool,
    run_restore,
    run_tool,
    terminate_group,
)
from prefect_db_backup.adapters.source import DumpStream, DumpUnit, Source, SourceInfo
from prefect_db_backup.errors import (
    AuthenticationError,
    BackupError,
    ConfigurationError,
    ConnectionFailedError,
    DumpFailedError,
    NotFoundError,
    RestoreFailedError,
)
from prefect_db_backup.redaction import scrub

_INSTALL_HINT = "install the PostgreSQL client tools (Debian: apt-get install postgresql-client)"
_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf rejects",
    "no pg_hba.conf entry",
)
_SSL_MISMATCH = ("does not support", "required", "certificate")
_APPLICATION_NAME = "prefect-db-backup"
#: Bytes of a dump's start read to find its header (ample for the archive header or the SQL preamble).
_HEADER_PEEK_BYTES = 16384
_USER_OBJECTS_SQL = """
    SELECT
        (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
           AND n.nspname NOT LIKE 'pg\\_temp%' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')),
        (SELECT count(*) FROM pg_largeobject_metadata)
"""
_TAR_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CREATE_ROLE = re.compile(rb"^CREATE ROLE (.+);\r?\n?$")


def conninfo_quote(value: str) -> str:
    """Quote a value for a libpq connection string (single quotes, backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def passfile_line(password: str) -> str:
    """Build a ``.pgpass`` line matching any host, port, database and user with ``password``."""
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def major_version_num(version: str) -> int | None:
    """Turn a version string (``15.20 (Debian ...)``, ``9.6.24``, ``16beta1``) into a major version number.

    Returns:
        ``major * 10000`` for 10 and later, ``major * 10000 + minor * 100`` before 10 (the form of
        ``server_version_num`` with the minor release stripped), or None if the string has no version.
    """
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", version)
    if match is None:
        return None
    major = int(match.group(1))
    if major >= 10:
        return major * 10000
    return major * 10000 + int(match.group(2) or 0) * 100


def major_label(num: int) -> str:
    """Human form of :func:`major_version_num`'s result (``15``, ``9.6``)."""
    return str(num // 10000) if num >= 100000 else f"{num // 10000}.{(num % 10000) // 100}"


class ArchiveHeader:
    """Facts read from the header of a ``pg_dump`` custom-format archive.

    Attributes:
        archive_version: Archive format version (``1.14``).
        database: Name of the dumped database.
        server_version: Version string of the server that was dumped.
        dump_version: Version string of the ``pg_dump`` that wrote it.
    """

    def __init__(
        self, archive_version: str, database: str | None, server_version: str | None, dump_version: str | None
    ) -> None:
        self.archive_version = archive_version
        self.database = database
        self.server_version = server_version
        self.dump_version = dump_version


def parse_custom_header(data: bytes, *, directory: bool = False) -> ArchiveHeader:
    """Parse the header of a custom-format archive (``PGDMP``), as ``pg_restore``'s ``ReadHead`` does.

    Args:
        data: The first bytes of the archive (a few kilobytes are plenty).
        directory: Parse the ``toc.dat`` of a directory-format dump instead (same header, format 5).

    Raises:
        ValueError: If ``data`` does not start with a complete custom-format header.
    """
    if not data.startswith(b"PGDMP"):
        raise ValueError("not a pg_dump custom-format archive (no PGDMP signature)")
    pos = 5

    def byte() -> int:
        nonlocal pos
        if pos >= len(data):
            raise ValueError("archive header is truncated")
        pos += 1
        return data[pos - 1]

    vmaj, vmin = byte(), byte()
    vrev = byte() if (vmaj, vmin) > (1, 0) else 0
    version = (vmaj, vmin, vrev)
    if version < (1, 10, 0):
        raise ValueError(f"archive version {vmaj}.{vmin} is too old to carry the server version")
    int_size = byte()
    byte()  # offset size
    fmt = byte()
    # The custom format writes 1; the toc.dat of a directory dump has been seen with 3 (PostgreSQL 15).
    expected = (3, 5) if directory else (1,)
    if fmt not in expected:
        raise ValueError(f"archive format {fmt} is not the {'directory' if directory else 'custom'} format")

    def read_int() -> int:
        sign = byte()
        value = 0
        for shift in range(int_size):
            value |= byte() << (8 * shift)
        return -value if sign else value

    def read_str() -> str | None:
        nonlocal pos
        length = read_int()
        if length < 0:
            return None
        if pos + length > len(data):
            raise ValueError("archive header is truncated")
        pos += length
        return data[pos - length : pos].decode("utf-8", "replace")

    if version >= (1, 15, 0):
        byte()  # compression algorithm
    else:
        read_int()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        read_int()
    database = read_str()
    server_version = read_str()
    dump_version = read_str()
    return ArchiveHeader(f"{vmaj}.{vmin}", database, server_version, dump_version)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Prefixed(io.RawIOBase):
    """A readable raw stream that yields ``prefix`` and then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = self._stream.read(len(view))
        view[: len(data)] = data
        return len(data)


class _RoleSafeSQL(io.RawIOBase):
    """Line filter over a ``pg_dumpall --globals-only`` script that tolerates roles that already exist."""

    def __init__(self, stream: io.RawIOBase) -> None:
        self._lines = self._filtered(stream)
        self._buffer = b""

    @staticmethod
    def _filtered(stream: io.RawIOBase) -> Iterator[bytes]:
        reader = io.BufferedReader(stream, 1 << 16)
        for line in iter(reader.readline, b""):
            match = _CREATE_ROLE.match(line)
            if match and b"$pdb_role$" not in line:
                role = match.group(1)
                yield (
                    b"DO $pdb_role$ BEGIN CREATE ROLE " + role + b"; "
                    b"EXCEPTION WHEN duplicate_object THEN RAISE NOTICE 'role already exists, keeping it'; "
                    b"END $pdb_role$;\n"
                )
            else:
                yield line

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            line = next(self._lines, None)
            if line is None:
                break
            self._buffer += line
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


class _SpooledTarDumpStream(DumpStream):
    """Runs a parallel ``pg_dump -Fd`` into a spool folder, then streams the folder as a tar."""

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        spool: Path,
        *,
        description: str,
        secrets: Sequence[str | None],
        cleanup: contextlib.ExitStack,
    ) -> None:
        self._description = description
        self._secrets = list(secrets)
        self._cleanup = cleanup
        self._spool = spool
        self._closed = False
        self._error: BaseException | None = None
        child_env = dict(os.environ)
        child_env.update(env)
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=child_env,
            start_new_session=True,
            close_fds=True,
        )
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb")
        self._thread = threading.Thread(target=self._produce, name="pg-dump-tar", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        """Process id (and process group id) of ``pg_dump``."""
        return self._proc.pid

    def _produce(self) -> None:
        try:
            _, stderr = self._proc.communicate()
            if self._proc.returncode != 0:
                tail = scrub(stderr.decode("utf-8", "replace")[-8192:].strip(), self._secrets)
                self._error = DumpFailedError(
                    f"{self._description} failed with exit code {self._proc.returncode}: "
                    f"{tail or 'no error output'}"
                )
                return
            with tarfile.open(fileobj=self._writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted((self._spool / "dump").iterdir()):
                    tar.add(path, arcname=path.name, recursive=False)
        except BaseException as exc:  # reported by close()
            if self._error is None:
                self._error = exc
        finally:
            with contextlib.suppress(OSError):
                self._writer.close()

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes of the tar stream."""
        return self._reader.read(size)

    def close(self) -> None:
        """Wait for the dump and tar to finish; raise :class:`DumpFailedError` if either failed."""
        if self._closed:
            return
        self._closed = True
        try:
            while self._reader.read(1 << 20):
                pass
            self._thread.join()
            if isinstance(self._error, BackupError):
                raise self._error
            if self._error is not None:
                raise DumpFailedError(
                    f"{self._description} failed while streaming the dump folder: "
                    f"{scrub(str(self._error), self._secrets)}"
                ) from self._error
        finally:
            self._release()

    def abort(self) -> None:
        """End ``pg_dump``'s process group and the tar producer, then remove the spool folder."""
        if self._closed:
            return
        self._closed = True
        try:
            terminate_group(self._proc)
            with contextlib.suppress(OSError):
                self._reader.close()  # unblocks a producer writing to the pipe
            self._thread.join(timeout=30)
        finally:
            self._release()

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            self._reader.close()
        self._cleanup.close()


class PostgresAdapter(Source):
    """A PostgreSQL server reached over TCP or a Unix socket. See the module docstring for decisions.

    Args:
        host: Host name, IP address or Unix socket directory.
        port: TCP port.
        user: Role to connect as (needs to read everything it dumps; a superuser for globals).
        password: Password, or None for trust/peer/certificate authentication or ``~/.pgpass``.
        sslmode: libpq ``sslmode`` (``disable``, ``prefer``, ``require``, ``verify-full``...).
        connect_timeout: Seconds allowed to establish a connection (for psycopg and every child tool).
        include_globals: Also dump roles and tablespaces (``pg_dumpall --globals-only``).
        maintenance_database: Database used for the connection test, listing and globals.
        parallel_jobs: With a value above 1, dump with ``--format=directory --jobs N`` through a spool folder.
        spool_dir: Parent folder for parallel-dump spool folders (default: the system temp folder).
        restore_no_owner: Restore with ``--no-owner --no-privileges``.
        pg_dump_path: Explicit path of ``pg_dump`` (default: found on PATH); likewise for the others.
        pg_dumpall_path: Explicit path of ``pg_dumpall``.
        pg_restore_path: Explicit path of ``pg_restore``.
        psql_path: Explicit path of ``psql``.
    """

    engine: ClassVar[str] = "postgres"
    system_databases: ClassVar[frozenset[str]] = frozenset({"postgres"})

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5432,
        user: str = "postgres",
        password: str | None = None,
        *,
        sslmode: str = "prefer",
        connect_timeout: int = 10,
        include_globals: bool = False,
        maintenance_database: str = "postgres",
        parallel_jobs: int = 1,
        spool_dir: str | None = None,
        restore_no_owner: bool = False,
        pg_dump_path: str | None = None,
        pg_dumpall_path: str | None = None,
        pg_restore_path: str | None = None,
        psql_path: str | None = None,
    ) -> None:
        if connect_timeout < 1:
            raise ConfigurationError("connect_timeout must be at least 1 second")
        if parallel_jobs < 1:
            raise ConfigurationError("parallel_jobs must be at least 1")
        self.host = host
        self.port = int(port)
        self.user = user
        self._password = password or None
        self.sslmode = sslmode
        self.connect_timeout = int(connect_timeout)
        self.include_globals = include_globals
        self.maintenance_database = maintenance_database
        self.parallel_jobs = parallel_jobs
        self.spool_dir = spool_dir
        self.restore_no_owner = restore_no_owner
        self._tools = {
            "pg_dump": pg_dump_path,
            "pg_dumpall": pg_dumpall_path,
            "pg_restore": pg_restore_path,
            "psql": psql_path,
        }

    # -- identity and connections ---------------------------------------------------------------------

    def describe(self) -> str:
        """``postgres://user@host:port`` (never the password)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("/") else self.host
        return f"postgres://{self.user}@{host}:{self.port}"

    def _secrets(self) -> list[str | None]:
        return [self._password]

    def conninfo(self, database: str) -> str:
        """A libpq connection string for ``database`` without the password (safe for argv)."""
        parts = {
            "host": self.host,
            "port": str(self.port),
            "user": self.user,
            "dbname": database,
            "sslmode": self.sslmode,
            "connect_timeout": str(self.connect_timeout),
            "application_name": _APPLICATION_NAME,
        }
        return " ".join(f"{key}={conninfo_quote(value)}" for key, value in parts.items())

    def _connect(self, database: str | None = None) -> psycopg.Connection[Any]:
        dbname = database or self.maintenance_database
        try:
            return psycopg.connect(
                self.conninfo(dbname),
                password=self._password,
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise self._translate(exc, f"connecting to database {dbname!r}") from exc

    def _translate(self, exc: psycopg.Error, action: str) -> BackupError:
        message = scrub(str(exc).strip(), self._secrets())
        sqlstate = getattr(exc, "sqlstate", None)
        lowered = message.lower()
        if sqlstate in ("28P01", "28000") or any(marker in lowered for marker in _AUTH_MARKERS):
            return AuthenticationError(
                f"{self.describe()}: the server refused the credentials of user {self.user!r} ({action}): "
                f"{message}",
                hint="check the user name and password, and the server's pg_hba.conf",
            )
        if re.search(r'role ".*" does not exist', message):
            return AuthenticationError(
                f"{self.describe()}: the server has no role {self.user!r} ({action}): {message}",
                hint="check the user name",
            )
        if "ssl" in lowered and any(word in lowered for word in _SSL_MISMATCH):
            return ConfigurationError(
                f"{self.describe()}: SSL setup does not match the server (sslmode={self.sslmode}, {action}): "
                f"{message}",
                hint="adjust sslmode or the server's SSL configuration",
            )
        if sqlstate == "3D000" or (re.search(r"database \".*\" does not exist", message) is not None):
            return NotFoundError(f"{self.describe()}: {action}: {message}")
        if sqlstate == "42501":
            return AuthenticationError(
                f"{self.describe()}: permission denied ({action}): {message}",
                hint=f"grant the needed privileges to {self.user!r}",
            )
        if isinstance(exc, psycopg.OperationalError):
            return ConnectionFailedError(
                f"{self.describe()}: cannot reach the server ({action}): {message}",
                hint=f"check host, port, sslmode and that the server is running "
                f"(connect timeout {self.connect_timeout} s)",
            )
        return DumpFailedError(f"{self.describe()}: {action} failed: {message}")

    def _tool(self, name: str) -> str:
        explicit = self._tools.get(name)
        if explicit:
            if not os.access(explicit, os.X_OK):
                raise ConfigurationError(f"{name} path {explicit!r} is not an executable file")
            return explicit
        return require_tool(name, hint=_INSTALL_HINT)

    @contextlib.contextmanager
    def _child_env(self) -> Iterator[dict[str, str]]:
        """Environment for a child tool: passfile (if any password), timeouts, application name."""
        env = {
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
            "PGAPPNAME": _APPLICATION_NAME,
            "PGSSLMODE": self.sslmode,
        }
        if self._password is None:
            yield env
            return
        with private_file(passfile_line(self._password), suffix=".pgpass") as passfile:
            env["PGPASSFILE"] = str(passfile)
            yield env

    # -- Source contract ----------------------------------------------------------------------------------

    def test_connection(self) -> SourceInfo:
        """Connect to the maintenance database, report server and ``pg_dump`` versions.

        Raises:
            AuthenticationError: The server refused the credentials.
            ConnectionFailedError: The server could not be reached within ``connect_timeout``.
            ConfigurationError: ``pg_dump`` is not installed.
        """
        with self._connect() as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), current_setting('server_version_num')"
            ).fetchone()
            ssl = conn.pgconn.ssl_in_use
        assert row is not None
        server_version, version_num = str(row[0]), str(row[1])
        details = {"server_version_num": version_num, "ssl": "on" if ssl else "off"}
        result = run_tool([self._tool("pg_dump"), "--version"])
        client_version = result.stdout.strip() or None
        if client_version:
            details["pg_dump_version"] = client_version
            tool_version = re.search(r"\(PostgreSQL\)\s+(\S+)", client_version)
            client_num = major_version_num(tool_version.group(1)) if tool_version else None
            server_num = major_version_num(server_version)
            if client_num is not None and server_num is not None and client_num < server_num:
                raise ConfigurationError(
                    f"{self.describe()}: {client_version} cannot dump a PostgreSQL {server_version} server",
                    hint=f"install pg_dump {major_label(server_num)} or newer",
                )
        return SourceInfo(
            engine="postgresql", server_version=server_version, client_version=client_version, details=details
        )

    def _all_databases(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname"
            ).fetchall()
        return [str(row[0]) for row in rows]

    def list_databases(self) -> list[str]:
        """Connectable non-template databases, without ``postgres`` (see the module docstring)."""
        return [db for db in self._all_databases() if db not in self.system_databases]

    def selectable_databases(self) -> list[str]:
        """Every connectable non-template database, ``postgres`` included (when named explicitly)."""
        return self._all_databases()

    def estimate_size(self, unit: DumpUnit) -> int | None:
        """Approximate size of a database's dump, for the progress percentage only.

        ``pg_database_size`` (indexes included, so it tends to overestimate) reads the database's files
        without taking any relation lock, so a table locked by a long migration cannot stall the backup
        here. Returns None for server-wide objects or when the size cannot be read within 5 seconds.
        """
        if unit.database is None:
            return None
        try:
            with self._connect(unit.database) as conn:
                conn.execute("SET statement_timeout = '5s'")
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        except (psycopg.Error, BackupError):
            return None
        return int(row[0]) if row and row[0] else None

    def dump_units(self, databases: Sequence[str]) -> list[DumpUnit]:
        """One unit per database, plus a ``globals`` unit when ``include_globals`` is set."""
        units = [self.database_unit(db) for db in databases]
        if self.include_globals:
            units.append(
                DumpUnit(
                    name="globals",
                    kind="globals",
                    extension="sql",
                    database=None,
                    format="pg_dumpall globals",
                )
            )
        return units

    def database_unit(self, database: str) -> DumpUnit:
        """A custom-format unit, or a directory-format tar unit when ``parallel_jobs > 1``."""
        if self.parallel_jobs > 1:
            return DumpUnit(
                name=database,
                kind="database",
                extension="tar",
                database=database,
                format="pg_dump directory (tar)",
            )
        return DumpUnit(
            name=database, kind="database", extension="dump", database=database, format="pg_dump custom"
        )

    def open_dump(self, unit: DumpUnit) -> DumpStream:
        """Start ``pg_dump`` (or ``pg_dumpall --globals-only``) and stream its output.

        Raises:
            ConfigurationError: The tool is missing or the unit is not one of ours.
        """
        cleanup = contextlib.ExitStack()
        try:
            env = cleanup.enter_context(self._child_env())
            if unit.kind == "globals":
                argv = [
                    self._tool("pg_dumpall"),
                    "--globals-only",
                    "--no-password",
                    f"--dbname={self.conninfo(self.maintenance_database)}",
                ]
                return ProcessDumpStream(
                    argv,
                    env=env,
                    description=f"pg_dumpall --globals-only of {self.describe()}",
                    secrets=self._secrets(),
                    cleanup=cleanup,
                )
            if unit.database is None:
                raise ConfigurationError(f"dump unit {unit.name!r} names no database")
            description = f"pg_dump of database {unit.database!r} on {self.describe()}"
            common = ["--no-password", f"--dbname={self.conninfo(unit.database)}"]
            if unit.format == "pg_dump directory (tar)":
                spool = Path(tempfile.mkdtemp(prefix="pdb-pgdump-", dir=self.spool_dir))
                cleanup.callback(shutil.rmtree, spool, ignore_errors=True)
                argv = [
                    self._tool("pg_dump"),
                    "--format=directory",
                    "--compress=0",
                    f"--jobs={self.parallel_jobs}",
                    f"--file={spool / 'dump'}",
                    *common,
                ]
                return _SpooledTarDumpStream(
                    argv, env, spool, description=description, secrets=self._secrets(), cleanup=cleanup
                )
            if unit.format != "pg_dump custom":
                raise ConfigurationError(f"unknown PostgreSQL dump format {unit.format!r}")
            argv = [self._tool("pg_dump"), "--format=custom", "--compress=0", *common]
            return ProcessDumpStream(
                argv, env=env, description=description, secrets=self._secrets(), cleanup=cleanup
            )
        except BaseException:
            cleanup.close()
            raise

    # -- restore --------------------------------------------------------------------------------------------

    def server_version_num(self, database: str | None = None) -> int:
        """The target server's ``server_version_num``."""
        with self._connect(database) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row is not None
        return int(row[0])

    def _check_target(self, dumped_version: str | None, target: str) -> None:
        """Refuse a dump from a newer major version, and a target database that already holds objects."""
        self._check_version(dumped_version, target)
        with self._connect(target) as conn:
            row = conn.execute(_USER_OBJECTS_SQL).fetchone()
        assert row is not None
        relations, large_objects = int(row[0]), int(row[1])
        if relations or large_objects:
            raise RestoreFailedError(
                f"{self.describe()}: refusing to restore into database {target!r}: it is not empty "
                f"({relations} relation(s), {large_objects} large object(s))",
                hint="restore into a new database (CREATE DATABASE ... TEMPLATE template0), "
                f"or drop {target!r} and create it again",
            )

    def _check_version(self, dumped_version: str | None, target: str | None) -> None:
        if not dumped_version:
            return
        dumped = major_version_num(dumped_version)
        if dumped is None:
            return
        server = self.server_version_num(target)
        server_major = major_version_num(f"{server // 10000}.{(server % 10000) // 100}") or server
        if dumped > server_major:
            raise RestoreFailedError(
                f"{self.describe()}: refusing to restore a dump of PostgreSQL {dumped_version} into an older "
                f"server (PostgreSQL {major_label(server_major)})",
                hint=f"restore into a PostgreSQL {major_label(dumped)} or newer server",
            )

    def restore(self, unit: DumpUnit, stream: BinaryIO, *, target_database: str | None = None) -> None:
        """Restore a dump of ``unit`` (see the module docstring for the rules).

        Database dumps are recognised by their first bytes (custom-format archive or directory-format tar),
        whatever ``unit.format`` says.

        Raises:
            RestoreFailedError: The dump is from a newer major version, unreadable, or the tool failed.
            NotFoundError: The target database does not exist.
        """
        if unit.kind == "globals":
            self._restore_globals(stream)
            return
        target = target_database or unit.database
        if target is None:
            raise ConfigurationError(f"no target database to restore unit {unit.name!r} into")
        # The bytes, not the unit, decide the format: a restore source configured differently from the
        # one that made the backup (parallel or not) still restores it.
        head = _read_exactly(stream, _HEADER_PEEK_BYTES)
        if not head.startswith(b"PGDMP") and head[257:262] == b"ustar":
            self._restore_directory_tar(_Prefixed(head, stream), target)
            return
        try:
            header = parse_custom_header(head)
        except ValueError as exc:
            raise RestoreFailedError(f"cannot restore unit {unit.name!r}: {exc}") from exc
        self._check_target(header.server_version, target)
        with self._child_env() as env:
            run_restore(
                [
                    self._tool("pg_restore"),
                    *self._restore_options(),
                    "--no-password",
                    f"--dbname={self.conninfo(target)}",
                ],
                _Prefixed(head, stream),
                env=env,
                description=f"pg_restore into database {target!r} on {self.describe()}",
                secrets=self._secrets(),
            )

    def _restore_options(self) -> list[str]:
        options = ["--exit-on-error"]
        if self.restore_no_owner:
            options += ["--no-owner", "--no-privileges"]
        return options

    def _restore_globals(self, stream: BinaryIO) -> None:
        head = _read_exactly(stream, _HEADER_PEEK_BYTES)
        match = re.search(rb"Dumped from database version (\S+)", head)
        self._check_version(match.group(1).decode() if match else None, None)
        with self._child_env() as env:
            run_restore(
                [
                    self._tool("psql"),
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--no-password",
                    f"--dbname={self.conninfo(self.maintenance_database)}",
                    "-f",
                    "-",
                ],
                _RoleSafeSQL(_Prefixed(head, stream)),
                env=env,
                description=f"psql restore of globals on {self.describe()}",
                secrets=self._secrets(),
            )

    def _restore_directory_tar(self, stream: io.RawIOBase, target: str) -> None:
        spool = Path(tempfile.mkdtemp(prefix="pdb-pgrestore-", dir=self.spool_dir))
        try:
            directory = spool / "dump"
            directory.mkdir()
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        # Only plain files with plain names: nothing can land outside the spool folder.
                        if not member.isfile() or not _TAR_MEMBER.fullmatch(member.name):
                            raise RestoreFailedError(f"unexpected entry {member.name!r} in a pg_dump tar")
                        source = tar.extractfile(member)
                        assert source is not None
                        with source, (directory / member.name).open("xb") as out:
                            shutil.copyfileobj(source, out, 1 << 20)
            except tarfile.TarError as exc:
                raise RestoreFailedError(f"cannot read the pg_dump directory tar: {exc}") from exc
            toc = directory / "toc.dat"
            if not toc.exists():
                raise RestoreFailedError("the pg_dump directory tar has no toc.dat")
            with toc.open("rb") as handle:
                head = handle.read(_HEADER_PEEK_BYTES)
            try:
                header = parse_custom_header(head, directory=True)
            except ValueError as exc:
                raise RestoreFailedError(f"cannot read the pg_dump directory header: {exc}") from exc
            self._check_target(header.server_version, target)
            with self._child_env() as env:
                proc_argv = [
                    self._tool("pg_restore"),
                    *self._restore_options(),
                    "--no-password",
                    f"--jobs={self.parallel_jobs}",
                    f"--dbname={self.conninfo(target)}",
                    str(directory),
                ]
                run_restore(
                    proc_argv,
                    io.BytesIO(b""),
                    env=env,
                    description=f"pg_restore into database {target!r} on {self.describe()}",
                    secrets=self._secrets(),
                )
        finally:
            shutil.rmtree(spool, ignore_errors=True)
