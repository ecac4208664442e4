"""Redis: an RDB snapshot, or a logical per-database dump that a running server replays.

Two modes:

- ``rdb``: one unit for the whole server (``name="server"``, kind ``globals``, extension ``rdb``): the
  snapshot a replica receives, fetched with ``redis-cli --rdb -`` over the network (no shell access to the
  host needed; the server forks a ``BGSAVE`` for it). It is a standard RDB file: check it with
  ``redis-check-rdb``, restore it by stopping a server, putting it in place as its ``dump.rdb`` and starting
  it. That needs access to the server's files, so :meth:`RedisAdapter.restore` refuses RDB units with a
  clear error instead of pretending to restore them remotely.
- ``logical`` (the default): one unit per non-empty logical database, named ``db<n>`` (``db0``, ``db3``;
  with ``db`` configured, only that one), whose dump is a ``redis-cli --pipe`` command stream of
  ``RESTORE ... REPLACE`` commands (see :mod:`prefect_db_backup.adapters.sources.redis_logical`).
  Restores replay it through ``redis-cli --pipe``, into the same database number or, with
  ``target_database="db<m>"``, into another one. Existing keys of the same name are replaced; other keys
  are left alone (use an empty database for an exact copy).

"Databases" for Redis are the logical databases ``db0``...``db15``. Redis Cluster, Redis Functions
(``FUNCTION DUMP``) and ACL users are not part of a logical dump; the RDB mode carries functions.

Permissions: the logical mode needs ``PING``, ``INFO``, ``TIME``, ``SCAN``, ``DUMP`` and ``PTTL`` (restore:
``SELECT``, ``RESTORE``); the RDB mode needs ``SYNC``/``PSYNC``, which managed services (ElastiCache,
Azure Cache, Memorystore) usually refuse: use the logical mode there. An RDB transfer waits for the
server's ``repl-diskless-sync-delay`` (5 s by default) before it starts.

Passwords reach ``redis-cli`` through ``REDISCLI_AUTH`` and the exporter child through its environment,
never through arguments.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Literal

import redis
from prefect_db_backup.adapters.process import ProcessDumpStream, require_tool, run_restore, run_tool
from prefect_db_backup.adapters.source import DumpStream, DumpUnit, Source, SourceInfo
from prefect_db_backup.adapters.sources.redis_logical import PASSWORD_ENV, SelectRewriter
from prefect_db_backup.errors import (
    AuthenticationError,
    BackupError,
    ConfigurationError,
    ConnectionFailedError,
    NotFoundError,
    RestoreFailedError,
)
from prefect_db_backup.redaction import scrub
from redis.backoff import NoBackoff
from redis.retry import Retry

RedisMode = Literal["rdb", "logical"]

_TOOL_HINT = "install redis-cli (Debian: apt-get install redis-tools)"
_DB_NAME = re.compile(r"^db(\d{1,5})$")
_AUTH_MARKERS = ("NOAUTH", "WRONGPASS", "NOPERM", "invalid password", "invalid username-password")


def parse_db_name(name: str) -> int:
    """Return the number of a logical database name ``db<n>``.

    Raises:
        NotFoundError: If the name is not of that form.
    """
    match = _DB_NAME.match(name)
    if match is None:
        raise NotFoundError(f"not a Redis logical database name: {name!r}", hint="use db0, db1, ...")
    return int(match.group(1))


class RedisAdapter(Source):
    """A Redis server (see the module docstring for modes and units).

    Args:
        host: Server host name or address.
        port: TCP port.
        username: ACL user name, or None for the default user.
        password: Password, or None.
        db: Only back up this logical database (logical mode); None for every non-empty one.
        mode: ``logical`` (restorable remotely) or ``rdb`` (whole-server snapshot, restored by hand).
        tls: Connect with TLS.
        tls_ca_file: CA bundle for verifying the server certificate.
        tls_insecure: Do not verify the server certificate (testing only).
        connect_timeout: Seconds allowed to connect before the server counts as unreachable.
    """

    engine = "redis"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6379,
        username: str | None = None,
        password: str | None = None,
        *,
        db: int | None = None,
        mode: RedisMode = "logical",
        tls: bool = False,
        tls_ca_file: str | None = None,
        tls_insecure: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        if mode not in ("rdb", "logical"):
            raise ConfigurationError(f"redis mode must be 'rdb' or 'logical' (got {mode!r})")
        if not 0 < port < 65536:
            raise ConfigurationError(f"redis port must be between 1 and 65535 (got {port})")
        if db is not None and db < 0:
            raise ConfigurationError(f"redis db must be a database number >= 0 (got {db})")
        if connect_timeout <= 0:
            raise ConfigurationError(f"redis connect_timeout must be positive (got {connect_timeout})")
        self.host = host
        self.port = port
        self.username = username or None
        self.password = password or None
        self.db = db
        self.mode: RedisMode = mode
        self.tls = tls
        self.tls_ca_file = tls_ca_file
        self.tls_insecure = tls_insecure
        self.connect_timeout = connect_timeout

    def describe(self) -> str:
        """``redis://[user@]host:port`` (``rediss://`` with TLS), without the password."""
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    # -- connections and errors -----------------------------------------------------------------------

    def _client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            username=self.username,
            password=self.password,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=max(30.0, self.connect_timeout),
            ssl=self.tls,
            ssl_ca_certs=self.tls_ca_file,
            ssl_cert_reqs="none" if self.tls_insecure else "required",
            decode_responses=False,
            # No silent retries: redis-py retries refused credentials and lost connections by default, which
            # turns one wrong password into seconds of retry storm; the backup flow decides about retries.
            retry=Retry(NoBackoff(), 0),
        )

    def _translate(self, exc: redis.RedisError) -> BackupError:
        detail = scrub(f"{type(exc).__name__}: {exc}", [self.password])
        if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError) or any(
            marker.lower() in str(exc).lower() for marker in _AUTH_MARKERS
        ):
            return AuthenticationError(
                f"{self.describe()}: the server refused the credentials or a permission: {detail}",
                hint="check the username and password (ACL) of the Redis source",
            )
        if "certificate verify failed" in str(exc).lower():
            return ConfigurationError(
                f"{self.describe()}: the server's TLS certificate is not trusted: {detail}",
                hint="set tls_ca_file to the CA that signed the server certificate",
            )
        if "DB index is out of range" in str(exc):
            return NotFoundError(f"{self.describe()}: no such logical database: {detail}")
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            return ConnectionFailedError(
                f"{self.describe()}: cannot reach the server: {detail}",
                hint="check host, port, TLS settings and that the server is running",
            )
        return ConnectionFailedError(f"{self.describe()}: server error: {detail}")

    @contextlib.contextmanager
    def _session(self, db: int = 0) -> Iterator[redis.Redis]:
        client = self._client(db)
        try:
            yield client
        except redis.RedisError as exc:
            raise self._translate(exc) from exc
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def _cli_base(self) -> list[str]:
        argv = [require_tool("redis-cli", hint=_TOOL_HINT), "-h", self.host, "-p", str(self.port)]
        if self.username:
            argv += ["--user", self.username]
        if self.tls:
            argv.append("--tls")
            if self.tls_ca_file:
                argv += ["--cacert", self.tls_ca_file]
            if self.tls_insecure:
                argv.append("--insecure")
        return argv

    def _cli_env(self) -> dict[str, str]:
        return {"REDISCLI_AUTH": self.password} if self.password else {}

    # -- facts ----------------------------------------------------------------------------------------

    def test_connection(self) -> SourceInfo:
        """Authenticate with ``PING`` and report the server and ``redis-cli`` versions."""
        with self._session() as client:
            client.ping()
            info = client.info("server")
        client_version: str | None = None
        with contextlib.suppress(ConfigurationError, OSError):
            out = run_tool([require_tool("redis-cli", hint=_TOOL_HINT), "--version"], timeout=30).stdout
            client_version = out.strip().removeprefix("redis-cli ").strip() or None
        return SourceInfo(
            engine="redis",
            server_version=str(info.get("redis_version", "unknown")),
            client_version=client_version,
            details={"mode": self.mode, "redis_mode": str(info.get("redis_mode", "unknown"))},
        )

    def list_databases(self) -> list[str]:
        """Non-empty logical databases as ``db<n>`` (only the configured ``db`` when one is set)."""
        if self.db is not None:
            with self._session() as client:
                client.ping()
            return [f"db{self.db}"]
        with self._session() as client:
            keyspace = client.info("keyspace")
        numbers = sorted(int(name[2:]) for name in keyspace if _DB_NAME.match(str(name)))
        return [f"db{n}" for n in numbers]

    def dump_units(self, databases: Sequence[str]) -> list[DumpUnit]:
        """Logical mode: one unit per database. RDB mode: one ``server`` unit, whatever is selected."""
        if self.mode == "rdb":
            return [
                DumpUnit(name="server", kind="globals", extension="rdb", database=None, format="redis rdb")
            ]
        return super().dump_units(databases)

    def database_unit(self, database: str) -> DumpUnit:
        """One ``.resp`` command stream per logical database ``db<n>``."""
        parse_db_name(database)
        return DumpUnit(
            name=database, kind="database", extension="resp", database=database, format="redis logical resp"
        )

    # -- dump -----------------------------------------------------------------------------------------

    def open_dump(self, unit: DumpUnit) -> DumpStream:
        """Start the dump of one unit: ``redis-cli --rdb -`` or the logical exporter child.

        Raises:
            AuthenticationError: If the server refuses the credentials.
            ConnectionFailedError: If the server cannot be reached.
            NotFoundError: If a logical unit names no valid database.
        """
        with self._session() as client:
            client.ping()  # classify credential and network problems before starting a child
        if unit.format == "redis rdb":
            argv = [*self._cli_base(), "--rdb", "-"]
            return ProcessDumpStream(
                argv,
                env=self._cli_env(),
                description=f"redis-cli --rdb of {self.describe()}",
                secrets=[self.password],
            )
        if unit.database is None:
            raise ConfigurationError(f"{self.describe()}: unit {unit.name!r} names no database")
        db = parse_db_name(unit.database)
        argv = [
            sys.executable,
            "-m",
            "prefect_db_backup.adapters.sources.redis_logical",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--db",
            str(db),
            "--timeout",
            str(self.connect_timeout),
        ]
        if self.username:
            argv += ["--username", self.username]
        if self.tls:
            argv.append("--tls")
            if self.tls_ca_file:
                argv += ["--tls-ca-file", self.tls_ca_file]
            if self.tls_insecure:
                argv.append("--tls-insecure")
        return ProcessDumpStream(
            argv,
            env={PASSWORD_ENV: self.password} if self.password else {},
            description=f"logical export of {unit.database} on {self.describe()}",
            secrets=[self.password],
        )

    # -- restore --------------------------------------------------------------------------------------

    def restore(self, unit: DumpUnit, stream: BinaryIO, *, target_database: str | None = None) -> None:
        """Replay a logical dump through ``redis-cli --pipe`` into ``target_database`` (``db<n>``).

        Raises:
            RestoreFailedError: For RDB units (they need file access to the server, see the module
                docstring), for a stream that is not a logical dump, or if any command fails.
        """
        if unit.format == "redis rdb":
            raise RestoreFailedError(
                f"{self.describe()}: an RDB snapshot cannot be restored over the network",
                hint="stop the target server, install the file as its dump.rdb (check it with "
                "redis-check-rdb) and start the server; or back up in logical mode to restore remotely",
            )
        database = target_database or unit.database
        if database is None:
            raise RestoreFailedError(f"{self.describe()}: no target database for {unit.name!r}")
        db = parse_db_name(database)
        with self._session(db) as client:
            client.ping()
        rewritten = SelectRewriter(stream, db)
        try:
            run_restore(
                [*self._cli_base(), "--pipe"],
                rewritten,
                env=self._cli_env(),
                description=f"redis-cli --pipe restore into {database} on {self.describe()}",
                secrets=[self.password],
            )
        except ValueError as exc:
            raise RestoreFailedError(f"{self.describe()}: cannot restore {unit.name!r}: {exc}") from exc
