"""Every other source through the whole backup flow: awkward data, backed up (zstd + AES-256-GCM) by the
``backup`` flow, restored into another database, compared. (PostgreSQL and SQLite: test_flow_postgres.py and
test_flow_backup.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.blocks import (
    BackupJob,
    EncryptionProfile,
    LocalDestination,
    MongoDBSource,
    MySQLSource,
    RedisSource,
)
from prefect_db_backup.flows.backup import backup_database
from prefect_db_backup.restore import restore_backup
from prefect_db_backup.results import BackupResult
from servers.mongo import MongoServer, mongo_server
from servers.mongo import available as mongo_available
from servers.redis_server import available as redis_available
from servers.redis_server import redis_server
from test_source_mongodb import load_awkward_data as load_mongo
from test_source_mongodb import snapshot as mongo_snapshot
from test_source_mysql import HOST as MYSQL_HOST
from test_source_mysql import PORT as MYSQL_PORT
from test_source_mysql import _server_up as mysql_up
from test_source_mysql import load_awkward_data as load_mysql
from test_source_mysql import snapshot as mysql_snapshot
from test_source_redis import load_awkward as load_redis
from test_source_redis import snapshot as redis_snapshot

pytestmark = pytest.mark.usefixtures("prefect_server")


def _back_up(source: Any, tmp_path: Path) -> tuple[BackupResult, EncryptionProfile]:
    key = EncryptionProfile.generate()
    job = BackupJob(
        name="flow-src",
        source=source,
        destinations=[LocalDestination(path=str(tmp_path))],
        compression="zstd",
        encryption=key,
    )
    result = backup_database(job)
    assert result.status == "success"
    return result, key


@pytest.fixture
def mysql_root() -> Iterator[Any]:
    require_infrastructure(mysql_up(), "MariaDB on 127.0.0.1:3306 and mariadb-dump")
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", autocommit=True, charset="utf8mb4")
    names = [f"pdb_flow_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    yield conn, names
    with conn.cursor() as cur:
        for name in names:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def test_mariadb_round_trip_through_the_flow(mysql_root: Any, tmp_path: Path) -> None:
    conn, (original, restored) = mysql_root
    load_mysql(conn, original)
    source = MySQLSource(host=MYSQL_HOST, port=MYSQL_PORT, user="root", databases=[original])
    result, key = _back_up(source, tmp_path)
    path = result.databases[0].path
    assert path and path.endswith(".sql.zst.enc")
    restore_backup(
        LocalAdapter(root=tmp_path), path, source.get_adapter(), key=key.key_bytes(), target_database=restored
    )
    assert mysql_snapshot(conn, restored) == mysql_snapshot(conn, original)


def test_redis_round_trip_through_the_flow(tmp_path: Path) -> None:
    require_infrastructure(redis_available(), "redis-server and redis-cli")
    with redis_server() as origin, redis_server() as target:
        load_redis(origin.client(3))
        result, key = _back_up(RedisSource(port=origin.port), tmp_path)
        [db] = result.databases
        assert db.name == "db3"
        restore_backup(
            LocalAdapter(root=tmp_path),
            db.path or "",
            RedisSource(port=target.port).get_adapter(),
            key=key.key_bytes(),
            target_database="db5",
        )
        assert redis_snapshot(target.client(5)) == redis_snapshot(origin.client(3))


@pytest.fixture
def mongo() -> Iterator[MongoServer]:
    require_infrastructure(mongo_available(), "nx-27017 (pip install nx-27017)")
    with mongo_server() as server:
        yield server


def test_mongodb_builtin_round_trip_through_the_flow(mongo: MongoServer, tmp_path: Path) -> None:
    original, restored = f"pdb_flow_{uuid.uuid4().hex[:8]}", f"pdb_flow_{uuid.uuid4().hex[:8]}"
    load_mongo(mongo, original)
    source = MongoDBSource(uri=mongo.uri, databases=[original], use_mongodump="never")
    result, key = _back_up(source, tmp_path)
    path = result.databases[0].path or ""
    restore_backup(
        LocalAdapter(root=tmp_path), path, source.get_adapter(), key=key.key_bytes(), target_database=restored
    )
    assert mongo_snapshot(mongo, restored) == mongo_snapshot(mongo, original)
