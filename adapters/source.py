"""The database source contract.

A source knows how to reach one database server (or file), list its databases, stream a dump of each one
and restore such a dump. Every source implements :class:`Source`; the conformance suite in
:mod:`prefect_db_backup.adapters.testing.source_suite` checks each rule against a real server by dumping
awkward data, restoring it into a fresh database and comparing.

Rules every implementation MUST follow:

- **Streams, never files.** :meth:`Source.open_dump` returns a :class:`DumpStream` that produces the dump
  while it is read, in bounded memory, without a full-size temporary file.
- **Failure is loud.** A dump that does not finish cleanly (non-zero exit, lost connection) makes
  :meth:`DumpStream.close` raise :class:`~prefect_db_backup.errors.DumpFailedError` with the scrubbed tail of
  the tool's error output. Reading to the end is never proof of success; ``close`` is.
- **No secret in arguments.** Passwords reach child processes through their environment or a private file
  (mode 0600, removed afterwards), never through ``argv``; no secret appears in a message.
- **Cancellation ends everything.** :meth:`DumpStream.abort` ends the dump's whole process group (SIGTERM,
  then SIGKILL after a grace period) and returns only once it is gone.
- **Classified errors.** Refused credentials raise :class:`~prefect_db_backup.errors.AuthenticationError`
  naming the source; an unreachable server :class:`~prefect_db_backup.errors.ConnectionFailedError` within a
  bounded time; a missing database :class:`~prefect_db_backup.errors.NotFoundError` naming it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, ClassVar, Literal

from prefect_db_backup.errors import NotFoundError

UnitKind = Literal["database", "globals"]


@dataclass(frozen=True)
class SourceInfo:
    """What a connection test learned about the server.

    Attributes:
        engine: Engine name, such as ``postgresql``, ``mariadb``, ``sqlite``.
        server_version: Version the server reports.
        client_version: Version of the dump tool used, if any.
        details: Further facts worth recording in the manifest (no secrets).
    """

    engine: str
    server_version: str
    client_version: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DumpUnit:
    """One file a backup produces: a database, or server-wide objects such as roles.

    Attributes:
        name: Name used in the backup's file name: the database name, or ``globals``.
        kind: ``database`` for one database, ``globals`` for server-wide objects.
        extension: File extension of the plain dump, without a dot (``dump``, ``sql``, ``sqlite``...).
        database: The database dumped, or None for server-wide objects.
        format: Short description of the dump format, recorded in the manifest (``pg_dump custom``).
    """

    name: str
    kind: UnitKind
    extension: str
    database: str | None
    format: str


class DumpStream(ABC):
    """A dump being produced. Read it to the end, then :meth:`close` it to learn whether it succeeded."""

    @abstractmethod
    def read(self, size: int = -1) -> bytes:
        """Return up to ``size`` bytes (all remaining when negative); ``b""`` at the end of the dump."""

    @abstractmethod
    def close(self) -> None:
        """Wait for the producer to finish and release its resources.

        Raises:
            DumpFailedError: If the dump did not complete successfully, with the scrubbed tail of its errors.
        """

    @abstractmethod
    def abort(self) -> None:
        """Stop the producer at once (its whole process group) and release resources. Idempotent."""

    def __enter__(self) -> DumpStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Source(ABC):
    """A database server (or file) to back up. See the module docstring for the contract.

    Attributes:
        engine: Registry name of the implementation (``postgres``, ``sqlite``, ...).
        system_databases: Databases never included in a backup of "all databases".
    """

    engine: ClassVar[str]
    system_databases: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def describe(self) -> str:
        """A human-readable identity without secrets, such as ``postgres://postgres@127.0.0.1:5432``."""

    @abstractmethod
    def test_connection(self) -> SourceInfo:
        """Connect, authenticate and report versions.

        Raises:
            AuthenticationError: If the server refuses the credentials.
            ConnectionFailedError: If the server cannot be reached within the configured timeout.
        """

    @abstractmethod
    def list_databases(self) -> list[str]:
        """List the user databases on the server, without system databases or templates."""

    def dump_units(self, databases: Sequence[str]) -> list[DumpUnit]:
        """Plan the files a backup of ``databases`` produces: by default one per database.

        Sources that also dump server-wide objects (PostgreSQL roles) append a ``globals`` unit.
        """
        return [self.database_unit(db) for db in databases]

    @abstractmethod
    def database_unit(self, database: str) -> DumpUnit:
        """Describe the dump file of one database."""

    @abstractmethod
    def open_dump(self, unit: DumpUnit) -> DumpStream:
        """Start dumping one unit and return the stream of its plain (uncompressed) dump bytes.

        Raises:
            BackupError: If the dump cannot be started.
        """

    @abstractmethod
    def restore(self, unit: DumpUnit, stream: BinaryIO, *, target_database: str | None = None) -> None:
        """Restore a plain dump of ``unit`` read from ``stream``.

        Args:
            unit: The unit the dump was made from (kind, format).
            stream: Readable plain dump bytes (already decrypted and decompressed).
            target_database: Restore into this database instead of ``unit.database``. It must exist and
                be empty, unless the source documents otherwise.

        Raises:
            RestoreFailedError: If the restore fails, with the scrubbed tail of the tool's errors.
        """

    def selectable_databases(self) -> list[str]:
        """Databases an explicit include list may name; by default the same as :meth:`list_databases`.

        A source overrides this when a system database may be backed up on request (PostgreSQL's
        ``postgres``) even though "all databases" leaves it out.
        """
        return self.list_databases()

    def resolve_databases(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[str]:
        """Choose which databases a backup covers.

        Args:
            include: Databases to back up; empty means every user database on the server.
            exclude: Databases to leave out.

        Returns:
            The selected databases in server order (or ``include`` order). "All databases" never includes
            a system database; an explicit include may name one that :meth:`selectable_databases` offers.

        Raises:
            NotFoundError: If an included database does not exist, naming every missing one.
        """
        wanted = list(dict.fromkeys(include))
        excluded = set(exclude)
        if not wanted:
            return [
                db for db in self.list_databases() if db not in excluded and db not in self.system_databases
            ]
        available = self.selectable_databases()
        missing = [db for db in wanted if db not in available]
        if missing:
            raise NotFoundError(
                f"{self.describe()}: database(s) not found: {', '.join(sorted(missing))}",
                hint=f"available: {', '.join(available) or 'none'}",
            )
        return [db for db in wanted if db not in excluded]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The source must not be used afterwards."""
