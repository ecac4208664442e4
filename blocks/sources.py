"""Source blocks for PostgreSQL and SQLite.

Blocks hold configuration and secrets; the behaviour lives in the adapters they build with
:meth:`get_adapter`, through :mod:`prefect_db_backup.adapters.registry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from prefect_db_backup.adapters.registry import source_class
from prefect_db_backup.adapters.source import Source
from prefect_db_backup.naming import validate_name
from pydantic import Field, HttpUrl, SecretStr, ValidationInfo, field_validator

_DOCS = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#readme")

SSLMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def _valid_names(values: list[str], field: str) -> list[str]:
    for index, value in enumerate(values):
        try:
            validate_name(value, field=f"{field}[{index}]")
        except Exception as exc:
            raise ValueError(str(exc)) from None
    return values


class PostgresSource(Block):
    """A PostgreSQL server, backed up with ``pg_dump`` (custom format) one database at a time.

    Each database becomes one ``pg_dump --format=custom`` file, restorable with ``pg_restore``; with
    ``include_globals`` the roles and tablespaces (``pg_dumpall --globals-only``) become a file of their own.
    When ``databases`` is empty every connectable, non-template database except ``postgres`` is backed up
    (name ``postgres`` explicitly to include it). The password reaches the tools in a private passfile,
    never in their arguments.

    Attributes:
        host: Server host, IP address or Unix socket folder.
        port: Server port.
        user: Role used for dumps and restores.
        password: Password of the role.
        databases: Databases to back up; empty means every user database.
        exclude_databases: Databases to leave out.
        include_globals: Whether to also back up roles and tablespaces.
        sslmode: libpq SSL mode.
        connect_timeout: Seconds before an unreachable server is reported.
        parallel_jobs: Parallel dump workers; above 1 uses the directory format through a spool folder.
        spool_dir: Folder for the spool of parallel dumps.
        maintenance_database: Database used for the connection test, listing and globals.

    Example:
        Load a saved PostgreSQL source and test it:
        ```python
        from prefect_db_backup.blocks import PostgresSource

        source = PostgresSource.load("BLOCK_NAME")
        print(source.get_adapter().test_connection())
        ```
    """

    _block_type_name = "DB Backup PostgreSQL Source"
    _documentation_url = _DOCS
    _description = "A PostgreSQL server to back up with pg_dump, one custom-format file per database."

    host: str = Field(default="127.0.0.1", description="Server host name, address or Unix socket folder.")
    port: int = Field(default=5432, ge=1, le=65535, description="Server TCP port.")
    user: str = Field(default="postgres", description="Role used for dumps and restores.")
    password: SecretStr | None = Field(
        default=None, description="Password of the role; empty for trust, peer or certificate logins."
    )
    databases: list[str] = Field(
        default_factory=list,
        description="Databases to back up; empty means every user database except 'postgres'.",
    )
    exclude_databases: list[str] = Field(default_factory=list, description="Databases to leave out.")
    include_globals: bool = Field(
        default=False, description="Also back up roles and tablespaces (pg_dumpall --globals-only)."
    )
    sslmode: SSLMode = Field(default="prefer", description="libpq SSL mode for every connection.")
    connect_timeout: int = Field(
        default=10,
        ge=1,
        le=600,
        description="Seconds allowed to connect before the server counts as unreachable.",
    )
    parallel_jobs: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Parallel pg_dump workers; above 1 dumps through a spool folder (directory format).",
    )
    spool_dir: str | None = Field(
        default=None, description="Folder for the spool of parallel dumps; empty uses the system temp folder."
    )
    maintenance_database: str = Field(
        default="postgres",
        description="Database used to test the connection, list databases and dump globals.",
    )

    @field_validator("databases", "exclude_databases")
    @classmethod
    def _safe_names(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return _valid_names(values, info.field_name or "databases")

    def get_adapter(self) -> Source:
        """Build the PostgreSQL source adapter."""
        return source_class("postgres")(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.get_secret_value() if self.password is not None else None,
            sslmode=self.sslmode,
            connect_timeout=self.connect_timeout,
            include_globals=self.include_globals,
            parallel_jobs=self.parallel_jobs,
            spool_dir=self.spool_dir,
            maintenance_database=self.maintenance_database,
        )

    def describe(self) -> str:
        """``postgres://user@host:port`` (no secret), exactly as the adapter names itself in errors."""
        return self.get_adapter().describe()


class SQLiteSource(Block):
    """A SQLite database file, copied online with SQLite's backup API.

    The copy is consistent even while other connections keep writing; it is the database file itself,
    openable with any SQLite tool.

    Attributes:
        path: Path of the database file.

    Example:
        Load a saved SQLite source and test it:
        ```python
        from prefect_db_backup.blocks import SQLiteSource

        source = SQLiteSource.load("BLOCK_NAME")
        print(source.get_adapter().test_connection())
        ```
    """

    _block_type_name = "DB Backup SQLite Source"
    _documentation_url = _DOCS
    _description = "A SQLite database file to back up with SQLite's online backup API."

    path: str = Field(..., description="Path of the SQLite database file.")

    @field_validator("path")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if not value or "\x00" in value:
            raise ValueError("path must be a non-empty file path without NUL")
        try:
            validate_name(Path(value).stem, field="path (database name)")
        except Exception as exc:
            raise ValueError(str(exc)) from None
        return value

    def get_adapter(self) -> Source:
        """Build the SQLite source adapter."""
        return source_class("sqlite")(self.path)

    def describe(self) -> str:
        """``sqlite://<absolute path>``, exactly as the adapter names itself in errors."""
        return self.get_adapter().describe()
