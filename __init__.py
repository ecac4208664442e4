"""prefect-db-backup: database backups as a Prefect 3 workload.

The package is laid out by responsibility:

- ``prefect_db_backup.blocks``: Prefect blocks holding configuration and secrets (sources, destinations,
  encryption keys, retention policies, jobs).
- ``prefect_db_backup.adapters``: behaviour behind those blocks (how to dump PostgreSQL, how to talk to S3),
  each kind behind one documented contract, with a registry and shared conformance suites.
- ``prefect_db_backup.pipeline``: the streaming stages (compress, encrypt, hash and count).
- ``prefect_db_backup.retention``: the pure retention planner.
- ``prefect_db_backup.tasks`` and ``prefect_db_backup.flows``: the Prefect orchestration.

Importing this package is cheap: it does not import Prefect. Import the submodule you need.
"""

__version__ = "0.1.0"

_LAZY_BLOCKS = (
    "BackupJob",
    "EncryptionProfile",
    "FTPDestination",
    "LocalDestination",
    "MongoDBSource",
    "MySQLSource",
    "PostgresSource",
    "RedisSource",
    "RetentionPolicy",
    "S3Destination",
    "SFTPDestination",
    "SMBDestination",
    "SQLiteSource",
    "WebDAVDestination",
)


def __getattr__(name: str) -> object:
    """Expose the block classes lazily.

    ``prefect block register -m prefect_db_backup`` finds them, yet ``import prefect_db_backup`` does not
    import Prefect.
    """
    if name in _LAZY_BLOCKS:
        from prefect_db_backup import blocks

        return getattr(blocks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_BLOCKS])
