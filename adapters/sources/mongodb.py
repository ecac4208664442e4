"""MongoDB: ``mongodump --archive`` when installed, otherwise the built-in mongodump-layout tar exporter.

Two dump formats, chosen when a unit is planned (``use_mongodump``: ``auto`` picks the tool when it is on
PATH) and recorded in the unit's ``format`` so a restore knows which one it reads:

- ``mongodump archive`` (``.archive``): ``mongodump --archive --db X``, streamed. The connection string,
  password included, goes to the tools in a private YAML ``--config`` file (mode 0600, removed afterwards),
  never in their arguments. Restored with ``mongorestore --archive --nsFrom 'X.*' --nsTo 'T.*'`` so the
  target database may have another name. **Unverified here**: this machine has no ``mongodump``; the
  command lines and config files are unit-tested, not run.
- ``mongodump directory tar`` (``.tar``): the built-in exporter
  (:mod:`prefect_db_backup.adapters.sources.mongo_archive`), restored by the built-in importer or, after
  ``tar -x``, by ``mongorestore --dir``.

System databases ``admin``, ``local`` and ``config`` are never part of "all databases".
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from prefect_db_backup.adapters.process import (
    ProcessDumpStream,
    private_file,
    require_tool,
    run_restore,
    run_tool,
)
from prefect_db_backup.adapters.source import DumpStream, DumpUnit, Source, SourceInfo
from prefect_db_backup.adapters.sources.mongo_archive import CLIENT_ENV, ArchiveError, import_archive
from prefect_db_backup.errors import (
    AuthenticationError,
    BackupError,
    ConfigurationError,
    ConnectionFailedError,
    RestoreFailedError,
)
from prefect_db_backup.redaction import scrub
from pymongo import MongoClient
from pymongo import errors as mongo_errors

UseMongodump = Literal["auto", "always", "never"]

ARCHIVE_FORMAT = "mongodump archive"
TAR_FORMAT = "mongodump directory tar"

_TOOL_HINT = "install the MongoDB Database Tools (mongodump, mongorestore) from mongodb.com"
_AUTH_CODES = {11, 13, 18, 8000}  # UserNotFound, Unauthorized, AuthenticationFailed, Atlas auth


#: First bytes of every mongodump archive (its magic number, little-endian 0x8199e26d).
ARCHIVE_MAGIC = bytes.fromhex("6de29981")


def _read_head(stream: BinaryIO, size: int) -> bytes:
    head = b""
    while len(head) < size:
        chunk = stream.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head


class _Prefixed:
    """A readable stream: ``head`` followed by the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)


def redact_uri(uri: str) -> str:
    """A connection string without its password (``mongodb://user@host/...``)."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{hosts}" if user else hosts))


def escape_namespace(name: str) -> str:
    r"""Escape a database name for mongorestore's ``--nsFrom``/``--nsTo`` patterns (``\\``, ``*``, ``$``)."""
    return name.replace("\\", "\\\\").replace("*", "\\*").replace("$", "\\$")


class MongoDBAdapter(Source):
    """A MongoDB deployment (see the module docstring).

    Args:
        uri: A ``mongodb://`` or ``mongodb+srv://`` connection string; when given, host and port are
            ignored. May contain credentials; they are never shown or put in arguments.
        host: Server host (when no ``uri``).
        port: Server port (when no ``uri``).
        username: User name (overrides the URI's).
        password: Password (overrides the URI's).
        auth_database: Authentication database (``authSource``).
        tls: Connect with TLS.
        tls_ca_file: CA bundle for TLS.
        connect_timeout: Seconds allowed to reach the server before it counts as unreachable.
        use_mongodump: ``auto`` (use ``mongodump`` when installed), ``always`` or ``never``.
    """

    engine = "mongodb"
    system_databases = frozenset({"admin", "local", "config"})

    def __init__(
        self,
        uri: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 27017,
        username: str | None = None,
        password: str | None = None,
        auth_database: str | None = None,
        tls: bool = False,
        tls_ca_file: str | None = None,
        connect_timeout: float = 10.0,
        use_mongodump: UseMongodump = "auto",
    ) -> None:
        if uri is not None and not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ConfigurationError("mongodb uri must start with mongodb:// or mongodb+srv://")
        if use_mongodump not in ("auto", "always", "never"):
            raise ConfigurationError(f"use_mongodump must be auto, always or never (got {use_mongodump!r})")
        if connect_timeout <= 0:
            raise ConfigurationError(f"mongodb connect_timeout must be positive (got {connect_timeout})")
        self.uri = uri or f"mongodb://{host}:{port}/"
        self.username = username or None
        self.password = password or None
        self.auth_database = auth_database or None
        self.tls = tls
        self.tls_ca_file = tls_ca_file
        self.connect_timeout = connect_timeout
        self.use_mongodump: UseMongodump = use_mongodump
        self._uri_password = urlsplit(self.uri).password

    # -- connection -----------------------------------------------------------------------------------

    def describe(self) -> str:
        """The connection string without password; with ``username`` shown when given separately."""
        shown = redact_uri(self.uri)
        if self.username and "@" not in urlsplit(shown).netloc:
            parts = urlsplit(shown)
            shown = urlunsplit(parts._replace(netloc=f"{self.username}@{parts.netloc}"))
        return shown

    @property
    def _secrets(self) -> list[str | None]:
        return [self.password, self._uri_password]

    def client_settings(self) -> dict[str, Any]:
        """Keyword arguments for ``MongoClient`` (contain the password: never log them)."""
        timeout_ms = int(self.connect_timeout * 1000)
        settings: dict[str, Any] = {
            "host": self.uri,
            "serverSelectionTimeoutMS": timeout_ms,
            "connectTimeoutMS": timeout_ms,
        }
        if self.username:
            settings["username"] = self.username
        if self.password:
            settings["password"] = self.password
        if self.auth_database:
            settings["authSource"] = self.auth_database
        if self.tls:
            settings["tls"] = True
            if self.tls_ca_file:
                settings["tlsCAFile"] = self.tls_ca_file
        return settings

    def _translate(self, exc: mongo_errors.PyMongoError) -> BackupError:
        detail = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
        code = getattr(exc, "code", None)
        if isinstance(exc, mongo_errors.OperationFailure) and code in _AUTH_CODES:
            return AuthenticationError(
                f"{self.describe()}: the server refused the credentials or a permission: {detail}",
                hint="check the user name, password and authentication database",
            )
        if isinstance(exc, mongo_errors.ConfigurationError | mongo_errors.InvalidURI):
            return ConfigurationError(f"{self.describe()}: invalid connection settings: {detail}")
        return ConnectionFailedError(
            f"{self.describe()}: cannot reach the server: {detail}",
            hint="check the connection string, network, TLS settings and that the server is running",
        )

    @contextlib.contextmanager
    def _client(self) -> Iterator[MongoClient[Any]]:
        try:
            client: MongoClient[Any] = MongoClient(**self.client_settings())
        except mongo_errors.PyMongoError as exc:
            raise self._translate(exc) from exc
        try:
            yield client
        except mongo_errors.PyMongoError as exc:
            raise self._translate(exc) from exc
        finally:
            client.close()

    def test_connection(self) -> SourceInfo:
        """Ping (authenticating) and report the server version and the mongodump version, if installed."""
        with self._client() as client:
            client.admin.command("ping")
            build = client.admin.command("buildInfo")
        client_version = None
        tool = shutil.which("mongodump")
        if tool:
            with contextlib.suppress(OSError):
                client_version = run_tool([tool, "--version"], timeout=30).stdout.splitlines()[0].strip()
        return SourceInfo(
            engine="mongodb",
            server_version=str(build.get("version") or "unknown"),
            client_version=client_version,
            details={"dump_format": ARCHIVE_FORMAT if self._mongodump_enabled() else TAR_FORMAT},
        )

    def list_databases(self) -> list[str]:
        """User databases, without ``admin``, ``local`` and ``config``."""
        with self._client() as client:
            # authorizedDatabases: a user allowed only some databases can still list (and back up) those.
            listing = client.list_databases(nameOnly=True, authorizedDatabases=True)
            names = sorted(str(entry["name"]) for entry in listing)
        return [name for name in names if name not in self.system_databases]

    def _ping(self) -> None:
        with self._client() as client:
            client.admin.command("ping")

    # -- planning -------------------------------------------------------------------------------------

    def _mongodump_enabled(self) -> bool:
        if self.use_mongodump == "never":
            return False
        if self.use_mongodump == "always":
            return True
        return shutil.which("mongodump") is not None

    def database_unit(self, database: str) -> DumpUnit:
        """One ``.archive`` (mongodump) or ``.tar`` (built-in exporter) file per database."""
        if self._mongodump_enabled():
            return DumpUnit(database, "database", "archive", database, ARCHIVE_FORMAT)
        return DumpUnit(database, "database", "tar", database, TAR_FORMAT)

    # -- mongodump / mongorestore ---------------------------------------------------------------------

    def tool_uri(self) -> str:
        """The connection string for the MongoDB tools, credentials and authSource folded in.

        The URI's path database (the default authentication database) moves to ``authSource`` so it
        cannot conflict with ``--db``. Contains the password: only ever written to a private file.
        """
        parts = urlsplit(self.uri)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path_db = parts.path.lstrip("/")
        if path_db and "authSource" not in query:
            query["authSource"] = path_db
        if self.auth_database:
            query["authSource"] = self.auth_database
        if self.tls:
            query["tls"] = "true"
            if self.tls_ca_file:
                query["tlsCAFile"] = self.tls_ca_file
        if "serverSelectionTimeoutMS" not in query:
            query["serverSelectionTimeoutMS"] = str(int(self.connect_timeout * 1000))
        netloc = parts.netloc
        if self.username or self.password:
            hosts = netloc.rpartition("@")[2]
            user = self.username or parts.username or ""
            password = self.password or parts.password or ""
            creds = quote(user, safe="")
            if password:
                creds += ":" + quote(password, safe="")
            netloc = f"{creds}@{hosts}"
        return urlunsplit((parts.scheme, netloc, "/", urlencode(query), ""))

    def tool_config(self) -> str:
        """The YAML ``--config`` file content for mongodump/mongorestore (holds the secret URI)."""
        return f"uri: {json.dumps(self.tool_uri())}\n"

    def mongodump_argv(self, database: str, config_file: str | Path) -> list[str]:
        """``mongodump`` command line for one database, streaming an archive to stdout (no secret)."""
        tool = require_tool("mongodump", hint=_TOOL_HINT)
        return [tool, f"--config={config_file}", "--archive", f"--db={database}", "--quiet"]

    def mongorestore_argv(self, source_db: str, target_db: str, config_file: str | Path) -> list[str]:
        """``mongorestore`` command line reading an archive from stdin into ``target_db`` (no secret)."""
        tool = require_tool("mongorestore", hint=_TOOL_HINT)
        return [
            tool,
            f"--config={config_file}",
            "--archive",
            f"--nsInclude={escape_namespace(source_db)}.*",
            f"--nsFrom={escape_namespace(source_db)}.*",
            f"--nsTo={escape_namespace(target_db)}.*",
            "--stopOnError",
            "--quiet",
        ]

    # -- dump and restore -----------------------------------------------------------------------------

    def open_dump(self, unit: DumpUnit) -> DumpStream:
        """Start the dump of one database (mongodump or the built-in exporter child).

        Raises:
            AuthenticationError: If the server refuses the credentials.
            ConnectionFailedError: If the server cannot be reached.
        """
        if unit.database is None:
            raise ConfigurationError(f"{self.describe()}: mongodb dumps databases only, not {unit.name!r}")
        # MongoDB has no empty databases: one without collections does not exist, and dumps as an empty
        # export (like mongodump). Names are checked against the server by resolve_databases; here only
        # reachability and credentials are, so that they fail classified rather than as a dump failure.
        self._ping()
        if unit.format == ARCHIVE_FORMAT:
            stack = contextlib.ExitStack()
            try:
                config = stack.enter_context(private_file(self.tool_config(), suffix=".yaml"))
                return ProcessDumpStream(
                    self.mongodump_argv(unit.database, config),
                    description=f"mongodump of {unit.database!r} on {self.describe()}",
                    secrets=self._secrets,
                    cleanup=stack,
                )
            except BaseException:
                stack.close()
                raise
        argv = [
            sys.executable,
            "-m",
            "prefect_db_backup.adapters.sources.mongo_archive",
            "export",
            f"--db={unit.database}",
        ]
        return ProcessDumpStream(
            argv,
            env={CLIENT_ENV: json.dumps(self.client_settings())},
            description=f"built-in export of {unit.database!r} on {self.describe()}",
            secrets=self._secrets,
        )

    def restore(self, unit: DumpUnit, stream: BinaryIO, *, target_database: str | None = None) -> None:
        """Restore one database dump into ``target_database`` (default: its own name), which should be empty.

        The format is recognised from the dump's first bytes (a mongodump archive's magic number, else a
        tar for the built-in importer), not from ``unit.format``.

        Raises:
            ConfigurationError: If the dump is a mongodump archive and mongorestore is not installed.
            RestoreFailedError: If the restore fails.
        """
        database = target_database or unit.database
        if not database:
            raise RestoreFailedError(f"{self.describe()}: no target database for {unit.name!r}")
        source_db = unit.database or database
        # The bytes say which format this is, whatever this adapter would choose for a new dump today
        # (mongodump may have been installed or removed since the backup was made).
        head = _read_head(stream, len(ARCHIVE_MAGIC))
        stream = _Prefixed(head, stream)  # type: ignore[assignment]
        if head == ARCHIVE_MAGIC:
            with private_file(self.tool_config(), suffix=".yaml") as config:
                run_restore(
                    self.mongorestore_argv(source_db, database, config),
                    stream,
                    description=f"mongorestore into {database!r} on {self.describe()}",
                    secrets=self._secrets,
                )
            return
        with self._client() as client:
            try:
                import_archive(client, stream, database)
            except ArchiveError as exc:
                raise RestoreFailedError(
                    f"{self.describe()}: cannot restore into {database!r}: {exc}"
                ) from exc
            except mongo_errors.OperationFailure as exc:
                if exc.code in _AUTH_CODES:
                    raise self._translate(exc) from exc
                detail = scrub(str(exc), self._secrets)
                raise RestoreFailedError(
                    f"{self.describe()}: restore into {database!r} failed: {detail}"
                ) from exc
