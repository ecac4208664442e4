"""Prefect blocks: configuration and secrets of sources, destinations, keys, retention and jobs.

Importing this module defines (and so registers with Prefect) every block type of the package; the
``prefect.collections`` entry point points here so a Prefect server in the same environment knows them.
"""

from prefect_db_backup.blocks.destinations import LocalDestination, S3Destination
from prefect_db_backup.blocks.encryption import EncryptionProfile
from prefect_db_backup.blocks.job import BackupJob
from prefect_db_backup.blocks.more_sources import MongoDBSource, MySQLSource, RedisSource
from prefect_db_backup.blocks.remote_destinations import (
    FTPDestination,
    SFTPDestination,
    SMBDestination,
    WebDAVDestination,
)
from prefect_db_backup.blocks.retention import RetentionPolicy
from prefect_db_backup.blocks.sources import PostgresSource, SQLiteSource

__all__ = [
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
]
