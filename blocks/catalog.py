"""The block types a job accepts as its source and destinations.

One place lists them, so the job block's schema (and so the Prefect UI's forms) offers every kind.
"""

from __future__ import annotations

from typing import TypeAlias

from prefect_db_backup.blocks.destinations import LocalDestination, S3Destination
from prefect_db_backup.blocks.more_sources import MongoDBSource, MySQLSource, RedisSource
from prefect_db_backup.blocks.remote_destinations import (
    FTPDestination,
    SFTPDestination,
    SMBDestination,
    WebDAVDestination,
)
from prefect_db_backup.blocks.sources import PostgresSource, SQLiteSource

SourceBlock: TypeAlias = PostgresSource | SQLiteSource | MySQLSource | RedisSource | MongoDBSource
DestinationBlock: TypeAlias = (
    LocalDestination | S3Destination | SFTPDestination | SMBDestination | FTPDestination | WebDAVDestination
)

SOURCE_BLOCKS: tuple[type, ...] = (PostgresSource, SQLiteSource, MySQLSource, RedisSource, MongoDBSource)
DESTINATION_BLOCKS: tuple[type, ...] = (
    LocalDestination,
    S3Destination,
    SFTPDestination,
    SMBDestination,
    FTPDestination,
    WebDAVDestination,
)
