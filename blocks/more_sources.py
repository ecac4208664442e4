"""Source blocks for MySQL/MariaDB, Redis and MongoDB.

Blocks hold configuration and secrets; the behaviour lives in the adapters they build with
:meth:`get_adapter`, through :mod:`prefect_db_backup.adapters.registry`.
"""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from prefect_db_backup.adapters.registry import source_class
from prefect_db_backup.adapters.source import Source
from prefect_db_backup.naming import validate_name
from pydantic import Field, HttpUrl, SecretStr, field_validator

_DOCS = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#readme")


def _valid_names(values: list[str], field: str) -> list[str]:
    for index, value in enumerate(values):
        try:
            validate_name(value, field=f"{field}[{index}]")
        except Exception as exc:
            raise ValueError(str(exc)) from None
    return values


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class MySQLSource(Block):
    """A MySQL or MariaDB server, backed up with ``mariadb-dump``/``mysqldump`` one database at a time.

    Dumps are consistent for InnoDB tables (``--single-transaction``) and include routines, triggers and
    events; they restore into a database of any name. The password reaches the tools in a private option
    file, never in their arguments.

    Attributes:
        host: Server host.
        port: Server port.
        user: Account name.
        password: Account password.
        databases: Databases to back up; empty means every user database.
        exclude_databases: Databases to leave out.
        connect_timeout: Seconds before an unreachable server is reported.
        dump_options: Extra arguments for the dump tool.

    Example:
        Load a saved MySQL source and test it:
        ```python
        from prefect_db_backup.blocks import MySQLSource

        source = MySQLSource.load("BLOCK_NAME")
        print(source.get_adapter().test_connection())
        ```
    """

    _block_type_name = "DB Backup MySQL Source"
    _documentation_url = _DOCS
    _description = "A MySQL or MariaDB server to back up with mariadb-dump or mysqldump."

    host: str = Field(default="127.0.0.1", description="Server host name or address.")
    port: int = Field(default=3306, ge=1, le=65535, description="Server TCP port.")
    user: str = Field(default="root", description="Account used for dumps and restores.")
    password: SecretStr | None = Field(default=None, description="Password of the account, if it has one.")
    databases: list[str] = Field(
        default_factory=list, description="Databases to back up; empty means every user database."
    )
    exclude_databases: list[str] = Field(default_factory=list, description="Databases to leave out.")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to connect before the server counts as unreachable."
    )
    dump_options: list[str] = Field(
        default_factory=list, description="Extra mariadb-dump/mysqldump arguments (never secrets)."
    )

    @field_validator("databases", "exclude_databases")
    @classmethod
    def _safe_names(cls, values: list[str]) -> list[str]:
        return _valid_names(values, "databases")

    def get_adapter(self) -> Source:
        """Build the MySQL source adapter."""
        return source_class("mysql")(
            host=self.host,
            port=self.port,
            user=self.user,
            password=_secret(self.password),
            connect_timeout=self.connect_timeout,
            dump_options=self.dump_options,
        )

    def describe(self) -> str:
        """``mysql://user@host:port`` (no secret)."""
        return f"mysql://{self.user}@{self.host}:{self.port}"


class RedisSource(Block):
    """A Redis server, backed up as a logical command stream per database or as an RDB snapshot.

    Logical mode (default) writes one file per non-empty logical database (``db0``, ``db1``...) that a
    running server replays with ``redis-cli --pipe``, and is what restores use. RDB mode fetches the whole
    server's snapshot like a replica (``redis-cli --rdb``); restoring it needs access to the server's files.

    Attributes:
        host: Server host.
        port: Server port.
        username: ACL user name.
        password: Password.
        mode: ``logical`` or ``rdb``.
        databases: Logical databases to back up (``db0``...); empty means every non-empty one.
        exclude_databases: Logical databases to leave out.
        tls: Whether to use TLS.
        tls_ca_file: CA bundle for TLS.
        connect_timeout: Seconds before an unreachable server is reported.

    Example:
        Load a saved Redis source and test it:
        ```python
        from prefect_db_backup.blocks import RedisSource

        source = RedisSource.load("BLOCK_NAME")
        print(source.get_adapter().test_connection())
        ```
    """

    _block_type_name = "DB Backup Redis Source"
    _documentation_url = _DOCS
    _description = "A Redis server to back up as per-database command streams or an RDB snapshot."

    host: str = Field(default="127.0.0.1", description="Server host name or address.")
    port: int = Field(default=6379, ge=1, le=65535, description="Server TCP port.")
    username: str | None = Field(default=None, description="ACL user name; empty uses the default user.")
    password: SecretStr | None = Field(default=None, description="Password of the user, if any.")
    mode: Literal["logical", "rdb"] = Field(
        default="logical",
        description="'logical' (restorable over the network) or 'rdb' (whole-server snapshot).",
    )
    databases: list[str] = Field(
        default_factory=list,
        description="Logical databases to back up, as db0, db1...; empty means every non-empty one.",
    )
    exclude_databases: list[str] = Field(default_factory=list, description="Logical databases to leave out.")
    tls: bool = Field(default=False, description="Connect with TLS.")
    tls_ca_file: str | None = Field(default=None, description="CA bundle that verifies the server.")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to connect before the server counts as unreachable."
    )

    @field_validator("databases", "exclude_databases")
    @classmethod
    def _safe_names(cls, values: list[str]) -> list[str]:
        return _valid_names(values, "databases")

    def get_adapter(self) -> Source:
        """Build the Redis source adapter."""
        return source_class("redis")(
            host=self.host,
            port=self.port,
            username=self.username,
            password=_secret(self.password),
            mode=self.mode,
            tls=self.tls,
            tls_ca_file=self.tls_ca_file,
            connect_timeout=self.connect_timeout,
        )

    def describe(self) -> str:
        """``redis://[user@]host:port`` (no secret)."""
        user = f"{self.username}@" if self.username else ""
        return f"{'rediss' if self.tls else 'redis'}://{user}{self.host}:{self.port}"


class MongoDBSource(Block):
    """A MongoDB deployment, backed up with ``mongodump --archive`` or the built-in exporter.

    When ``mongodump`` is installed (and ``use_mongodump`` allows it) each database becomes a mongodump
    archive; otherwise the built-in exporter writes mongodump's directory layout as one tar per database.
    Credentials reach the tools through a private file or the environment, never their arguments.

    Attributes:
        uri: Connection string.
        username: User name.
        password: Password.
        auth_database: Authentication database.
        databases: Databases to back up; empty means every user database.
        exclude_databases: Databases to leave out.
        tls: Whether to use TLS.
        tls_ca_file: CA bundle for TLS.
        connect_timeout: Seconds before an unreachable server is reported.
        use_mongodump: ``auto``, ``always`` or ``never``.

    Example:
        Load a saved MongoDB source and test it:
        ```python
        from prefect_db_backup.blocks import MongoDBSource

        source = MongoDBSource.load("BLOCK_NAME")
        print(source.get_adapter().test_connection())
        ```
    """

    _block_type_name = "DB Backup MongoDB Source"
    _documentation_url = _DOCS
    _description = "A MongoDB deployment to back up with mongodump or the built-in exporter."

    uri: str = Field(
        default="mongodb://127.0.0.1:27017/",
        description="Connection string (mongodb:// or mongodb+srv://), preferably without a password.",
    )
    username: str | None = Field(default=None, description="User name; overrides the URI's.")
    password: SecretStr | None = Field(default=None, description="Password; overrides the URI's.")
    auth_database: str | None = Field(default=None, description="Authentication database (authSource).")
    databases: list[str] = Field(
        default_factory=list, description="Databases to back up; empty means every user database."
    )
    exclude_databases: list[str] = Field(default_factory=list, description="Databases to leave out.")
    tls: bool = Field(default=False, description="Connect with TLS.")
    tls_ca_file: str | None = Field(default=None, description="CA bundle that verifies the server.")
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to connect before the server counts as unreachable."
    )
    use_mongodump: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="'auto' uses mongodump when installed, else the built-in exporter; or force either.",
    )

    @field_validator("databases", "exclude_databases")
    @classmethod
    def _safe_names(cls, values: list[str]) -> list[str]:
        return _valid_names(values, "databases")

    def get_adapter(self) -> Source:
        """Build the MongoDB source adapter."""
        return source_class("mongodb")(
            self.uri,
            username=self.username,
            password=_secret(self.password),
            auth_database=self.auth_database,
            tls=self.tls,
            tls_ca_file=self.tls_ca_file,
            connect_timeout=self.connect_timeout,
            use_mongodump=self.use_mongodump,
        )

    def describe(self) -> str:
        """The connection string without its password."""
        from prefect_db_backup.adapters.sources.mongodb import redact_uri

        return redact_uri(self.uri)


__all__ = ["MongoDBSource", "MySQLSource", "RedisSource"]
