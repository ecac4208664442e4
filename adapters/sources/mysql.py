"""MySQL and MariaDB: one logical SQL dump per database with ``mariadb-dump`` / ``mysqldump``.

What a dump contains and how it restores:

- Consistent and complete by default: ``--single-transaction`` (a consistent snapshot of InnoDB tables
  without locking; MyISAM and other non-transactional tables are NOT snapshot-consistent), routines,
  triggers, events, binary strings as hex, ``utf8mb4``.
- Each database is dumped on its own WITHOUT ``CREATE DATABASE`` or ``USE`` statements, so a dump restores
  into any database: :meth:`MySQLAdapter.restore` runs the ``mariadb``/``mysql`` client against the target
  database (which must exist, and should be empty) and feeds it the dump on stdin. By hand:
  ``mariadb --binary-mode TARGET < app.sql``.
- Definitions are dumped as the server stores them: a trigger, routine or event whose text names its own
  database explicitly (``CREATE TRIGGER app.t ... ON app.orders``) still names it after a restore under
  another name (a trigger then fails loudly with "Trigger in wrong schema"; a routine body silently keeps
  pointing at the original database). Views are stored resolved and restore cleanly under any name.
- Binary columns are written as hex, which doubles their size in a statement: the restore server's
  ``max_allowed_packet`` must exceed twice the largest binary value (the clients are given 1 GiB).
- Objects keep their ``DEFINER``; restoring routines, views, triggers and events defined by another account
  needs a user allowed to set that definer (``SUPER`` or ``SET USER``), as with any mysqldump restore.
- The password reaches the tools in a private option file (mode 0600, removed afterwards) passed as
  ``--defaults-extra-file``, their first argument; it never appears in a process's arguments.
- The server flavour and version (pymysql) and the dump tool's flavour (``--version``) are detected so that
  MySQL-only options (``--set-gtid-purged=OFF``, ``--column-statistics=0``) are passed only to a MySQL client
  that has them, in the situation that needs them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import pymysql
from prefect_db_backup.adapters.process import (
    ProcessDumpStream,
    private_file,
    require_tool,
    run_restore,
    run_tool,
)
from prefect_db_backup.adapters.source import DumpStream, DumpUnit, Source, SourceInfo
from prefect_db_backup.errors import (
    AuthenticationError,
    BackupError,
    ConfigurationError,
    ConnectionFailedError,
    NotFoundError,
    RestoreFailedError,
)
from prefect_db_backup.redaction import scrub

#: Largest packet the dump and restore clients accept (a row or statement), the protocol maximum.
MAX_ALLOWED_PACKET = "1G"

_TOOL_HINT = "install the MariaDB or MySQL client tools (Debian: apt-get install mariadb-client)"

# pymysql / server error codes worth classifying.
_AUTH_ERRORS = {1044, 1045, 1698, 1227, 1142, 1143}
_UNKNOWN_DATABASE = 1049
_CONNECTION_ERRORS = {2002, 2003, 2005, 2006, 2013, 2055}


@dataclass(frozen=True)
class ClientTool:
    """A MySQL-family command-line program and what it is.

    Attributes:
        path: Executable path.
        flavour: ``mariadb`` or ``mysql``.
        version: Version text from ``--version`` (``10.11.19`` or ``8.0.36``).
    """

    path: str
    flavour: str
    version: str

    @property
    def major(self) -> int:
        """Major version number (0 when unknown)."""
        match = re.match(r"(\d+)", self.version)
        return int(match.group(1)) if match else 0


def parse_tool_version(text: str) -> tuple[str, str]:
    """Tell the flavour and version of a client from its ``--version`` output.

    Examples: ``mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu`` is
    ``("mariadb", "10.11.19")``; ``mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)``
    is ``("mysql", "8.0.36")``.

    Returns:
        ``(flavour, version)``; version is empty when it cannot be found.
    """
    distrib = re.search(r"Distrib\s+([\d.]+)(-MariaDB)?", text, re.IGNORECASE)
    if "mariadb" in text.lower():
        return "mariadb", distrib.group(1) if distrib else ""
    if distrib:  # old MySQL clients: "Ver 10.13 Distrib 5.7.44, for Linux"
        return "mysql", distrib.group(1)
    ver = re.search(r"Ver\s+([\d.]+)", text)
    return "mysql", ver.group(1) if ver else ""


def _escape_option_value(value: str) -> str:
    """Quote a value for a MySQL option file (backslash escapes inside double quotes)."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


class MySQLAdapter(Source):
    """A MySQL or MariaDB server, dumped with ``mariadb-dump``/``mysqldump`` (see the module docstring).

    Args:
        host: Server host name or address.
        port: TCP port.
        user: Account name.
        password: Password, or None for none.
        connect_timeout: Seconds allowed to connect before the server counts as unreachable.
        socket: Unix socket path; when set it is used instead of TCP.
        dump_options: Extra arguments for the dump tool (no secrets), added after the defaults.
        restore_options: Extra arguments for the restore client (no secrets).
    """

    engine = "mysql"
    system_databases = frozenset({"information_schema", "performance_schema", "mysql", "sys"})

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str = "root",
        password: str | None = None,
        *,
        connect_timeout: float = 10.0,
        socket: str | None = None,
        dump_options: Sequence[str] = (),
        restore_options: Sequence[str] = (),
    ) -> None:
        if not 0 < port < 65536:
            raise ConfigurationError(f"mysql port must be between 1 and 65535 (got {port})")
        if connect_timeout <= 0:
            raise ConfigurationError(f"mysql connect_timeout must be positive (got {connect_timeout})")
        self.host = host
        self.port = port
        self.user = user
        self.password = password or None
        self.connect_timeout = connect_timeout
        self.socket = socket
        self.dump_options = list(dump_options)
        self.restore_options = list(restore_options)

    # -- identity and server facts -----------------------------------------------------------------

    def describe(self) -> str:
        """``mysql://user@host:port`` (or the socket path), without the password."""
        where = self.socket if self.socket else f"{self.host}:{self.port}"
        return f"mysql://{self.user}@{where}"

    def _connect(self, database: str | None = None) -> pymysql.connections.Connection[Any]:
        try:
            return pymysql.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password or "",
                database=database,
                unix_socket=self.socket,
                connect_timeout=max(1, round(self.connect_timeout)),
                read_timeout=max(30, round(self.connect_timeout)),
                charset="utf8mb4",
                autocommit=True,
            )
        except pymysql.err.MySQLError as exc:
            raise self._translate(exc, database) from exc

    def _translate(self, exc: pymysql.err.MySQLError, database: str | None = None) -> BackupError:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        detail = scrub(str(exc.args[1]) if len(exc.args) > 1 else str(exc), [self.password])
        if code in _AUTH_ERRORS:
            return AuthenticationError(
                f"{self.describe()}: the server refused the credentials or a permission: {detail}",
                hint="check the user name and password, and the account's privileges",
            )
        if code == _UNKNOWN_DATABASE:
            return NotFoundError(f"{self.describe()}: database not found: {database}")
        if code in _CONNECTION_ERRORS or isinstance(exc, pymysql.err.OperationalError):
            return ConnectionFailedError(
                f"{self.describe()}: cannot reach the server: {detail}",
                hint="check host, port, network and that the server is running",
            )
        return ConnectionFailedError(f"{self.describe()}: server error: {detail}")

    @contextlib.contextmanager
    def _cursor(self, database: str | None = None) -> Iterator[Any]:
        conn = self._connect(database)
        try:
            with conn.cursor() as cur:
                yield cur
        except pymysql.err.MySQLError as exc:
            raise self._translate(exc, database) from exc
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    @cached_property
    def _server(self) -> tuple[str, str, str]:
        """``(flavour, version, version_comment)`` of the server."""
        with self._cursor() as cur:
            cur.execute("SELECT VERSION(), @@version_comment")
            version, comment = cur.fetchone()
        flavour = "mariadb" if "mariadb" in f"{version} {comment}".lower() else "mysql"
        return flavour, str(version), str(comment or "")

    def _server_major(self) -> int:
        match = re.match(r"(\d+)", self._server[1])
        return int(match.group(1)) if match else 0

    def _tool(self, names: Sequence[str]) -> ClientTool:
        """Pick a client program, preferring the one of the server's flavour when both are installed."""
        found: list[ClientTool] = []
        for name in names:
            try:
                path = require_tool(name, hint=_TOOL_HINT)
            except ConfigurationError:
                continue
            result = run_tool([path, "--version"], timeout=30)
            flavour, version = parse_tool_version(result.stdout + result.stderr)
            found.append(ClientTool(path=path, flavour=flavour, version=version))
        if not found:
            raise ConfigurationError(f"none of the programs {', '.join(names)} is installed", hint=_TOOL_HINT)
        server_flavour = self._server[0]
        for tool in found:
            if tool.flavour == server_flavour:
                return tool
        return found[0]

    @cached_property
    def dump_tool(self) -> ClientTool:
        """The dump program used (``mariadb-dump`` or ``mysqldump``)."""
        return self._tool(["mariadb-dump", "mysqldump"])

    @cached_property
    def client_tool(self) -> ClientTool:
        """The client program used for restores (``mariadb`` or ``mysql``)."""
        return self._tool(["mariadb", "mysql"])

    def test_connection(self) -> SourceInfo:
        """Connect, authenticate and report server and dump tool versions."""
        flavour, version, comment = self._server
        try:
            tool: ClientTool | None = self.dump_tool
        except ConfigurationError:
            tool = None
        details = {"flavour": flavour, "version_comment": comment}
        if tool is not None:
            details["dump_tool"] = f"{Path(tool.path).name} ({tool.flavour})"
        return SourceInfo(
            engine=flavour,
            server_version=version,
            client_version=tool.version if tool else None,
            details=details,
        )

    def list_databases(self) -> list[str]:
        """User databases, without ``information_schema``, ``performance_schema``, ``mysql`` and ``sys``."""
        with self._cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
            names = [str(row[0]) for row in cur.fetchall()]
        return [name for name in names if name not in self.system_databases]

    def _require_database(self, database: str) -> None:
        with self._cursor() as cur:
            cur.execute("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (database,))
            if cur.fetchone() is None:
                raise NotFoundError(f"{self.describe()}: database not found: {database}")

    # -- dump -----------------------------------------------------------------------------------------

    def database_unit(self, database: str) -> DumpUnit:
        """One ``.sql`` file per database."""
        return DumpUnit(
            name=database, kind="database", extension="sql", database=database, format="mysqldump sql"
        )

    def _option_file(self) -> str:
        lines = ["[client]", f"user={_escape_option_value(self.user)}"]
        if self.password:
            lines.append(f"password={_escape_option_value(self.password)}")
        if self.socket:
            lines += [f"socket={_escape_option_value(self.socket)}", "protocol=SOCKET"]
        else:
            lines += [f"host={_escape_option_value(self.host)}", f"port={self.port}", "protocol=TCP"]
        # Only the interactive client knows connect-timeout (the dump tools reject it as unknown); the
        # dump is preceded by a pymysql check that is bounded by the timeout.
        lines += ["[mysql]", f"connect-timeout={max(1, round(self.connect_timeout))}"]
        return "\n".join(lines) + "\n"

    def dump_argv(self, database: str, option_file: str | Path) -> list[str]:
        """The dump command line for ``database`` (contains no secret)."""
        tool = self.dump_tool
        argv = [
            tool.path,
            f"--defaults-extra-file={option_file}",  # must come first
            "--single-transaction",
            "--quick",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            f"--max-allowed-packet={MAX_ALLOWED_PACKET}",
            "--skip-dump-date",
        ]
        argv += self._flavour_options(tool)
        argv += self.dump_options
        # Without --databases: no CREATE DATABASE / USE, so the dump restores into any database name.
        argv += ["--", database]
        return argv

    def _flavour_options(self, tool: ClientTool) -> list[str]:
        """Options that exist only in some clients, added only where they exist and are needed."""
        options: list[str] = []
        server_flavour = self._server[0]
        if tool.flavour == "mysql":
            # MySQL's mysqldump (5.6+) writes SET @@GLOBAL.GTID_PURGED on GTID servers, which breaks a
            # restore into another server; MariaDB's tool has neither the statement nor the option.
            if server_flavour == "mysql" and self._server_major() >= 5:
                options.append("--set-gtid-purged=OFF")
            # mysqldump 8 queries COLUMN_STATISTICS, absent from MariaDB and MySQL 5.7 servers.
            if tool.major >= 8 and (server_flavour == "mariadb" or self._server_major() < 8):
                options.append("--column-statistics=0")
        return options

    def open_dump(self, unit: DumpUnit) -> DumpStream:
        """Start ``mariadb-dump`` for one database; the stream yields its SQL.

        Raises:
            NotFoundError: If the database does not exist.
            AuthenticationError: If the server refuses the credentials.
            ConnectionFailedError: If the server cannot be reached.
            ConfigurationError: If no dump tool is installed.
        """
        if unit.database is None:
            raise ConfigurationError(f"{self.describe()}: mysql dumps databases only, not {unit.name!r}")
        self._require_database(unit.database)
        stack = contextlib.ExitStack()
        try:
            option_file = stack.enter_context(private_file(self._option_file(), suffix=".cnf"))
            argv = self.dump_argv(unit.database, option_file)
            return ProcessDumpStream(
                argv,
                description=f"{Path(argv[0]).name} of {unit.database!r} on {self.describe()}",
                secrets=[self.password],
                cleanup=stack,
            )
        except BaseException:
            stack.close()
            raise

    # -- restore --------------------------------------------------------------------------------------

    def restore_argv(self, database: str, option_file: str | Path) -> list[str]:
        """The restore client command line for ``database`` (contains no secret)."""
        return [
            self.client_tool.path,
            f"--defaults-extra-file={option_file}",  # must come first
            "--binary-mode",
            "--default-character-set=utf8mb4",
            f"--max-allowed-packet={MAX_ALLOWED_PACKET}",
            "--batch",
            *self.restore_options,
            f"--database={database}",
        ]

    def restore(self, unit: DumpUnit, stream: BinaryIO, *, target_database: str | None = None) -> None:
        """Replay a dump into ``target_database`` (default: the unit's database) through the client.

        The target database must exist and should be empty (the dump drops and recreates its tables).

        Raises:
            NotFoundError: If the target database does not exist.
            RestoreFailedError: If the client fails, with the scrubbed tail of its errors.
        """
        database = target_database or unit.database
        if not database:
            raise RestoreFailedError(f"{self.describe()}: no target database given for {unit.name!r}")
        self._require_database(database)
        with private_file(self._option_file(), suffix=".cnf") as option_file:
            argv = self.restore_argv(database, option_file)
            run_restore(
                argv,
                stream,
                description=f"{Path(argv[0]).name} restore into {database!r} on {self.describe()}",
                secrets=[self.password],
            )
