"""Retention end to end on real destinations (local folder, S3 on SeaweedFS): two jobs share a folder,
locks, unreadable manifests, leftovers, dry runs."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect_aws import AwsClientParameters, MinIOCredentials
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.blocks import BackupJob, LocalDestination, RetentionPolicy, S3Destination, SQLiteSource
from prefect_db_backup.errors import PermanentError
from prefect_db_backup.flows.backup import backup_database
from prefect_db_backup.flows.retention import apply_retention
from prefect_db_backup.inventory import take_inventory
from prefect_db_backup.locking import set_locked

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(params=["local", "s3"])
def destination_block(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        yield LocalDestination(path=str(tmp_path / "shared"))
        return
    server = request.getfixturevalue("seaweedfs")
    bucket = server.new_bucket(object_lock=True)
    yield S3Destination(
        bucket=bucket,
        prefix="team/backups",
        credentials=MinIOCredentials(
            minio_root_user=server.access_key,
            minio_root_password=server.secret_key,
            region_name=server.region,
            aws_client_parameters=AwsClientParameters(endpoint_url=server.endpoint),
        ),
    )


def _source(tmp_path: Path, name: str) -> SQLiteSource:
    path = tmp_path / f"{name}.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO t (v) VALUES ('x')")
    return SQLiteSource(path=str(path))


def _paths(destination: Destination, job: str) -> list[str]:
    return [b.path for b in take_inventory(destination, job).committed]


def test_two_jobs_sharing_a_destination_locks_and_dry_run(destination_block: Any, tmp_path: Path) -> None:
    keep_two = RetentionPolicy(keep_last=2)
    job_a = BackupJob(
        name="alpha", source=_source(tmp_path, "a"), destinations=[destination_block], retention=keep_two
    )
    job_b = BackupJob(
        name="beta", source=_source(tmp_path, "b"), destinations=[destination_block], retention=keep_two
    )
    dest = destination_block.get_adapter()

    first_a = backup_database(job_a, lock=True).databases[0].path
    b_paths = [backup_database(job_b).databases[0].path for _ in range(2)]
    a_paths = [first_a] + [backup_database(job_a).databases[0].path for _ in range(3)]

    # alpha: the locked first backup survives beside the two newest; beta is never touched by alpha
    assert _paths(dest, "alpha") == [first_a, *a_paths[-2:]]
    assert _paths(dest, "beta") == b_paths
    assert take_inventory(dest, "alpha").committed[0].manifest.locked

    # a locked backup is protected by the storage too, where the storage can (S3 legal hold)
    if dest.capabilities.storage_lock:
        with pytest.raises(PermanentError, match="lock"):
            dest.delete(first_a)
        assert dest.exists(first_a)

    set_locked(dest, "alpha", first_a, False)
    plan = apply_retention(job_a, dry_run=True)
    assert plan[0].deleted == [first_a] and plan[0].dry_run
    assert _paths(dest, "alpha") == [first_a, *a_paths[-2:]], "a dry run deletes nothing"

    apply_retention(job_a)
    assert _paths(dest, "alpha") == a_paths[-2:]
    assert not dest.exists(first_a) and not dest.exists(f"{first_a}.meta.json")
    assert _paths(dest, "beta") == b_paths


def test_unreadable_manifest_keeps_its_backup_and_old_leftovers_go(tmp_path: Path) -> None:
    root = tmp_path / "dest"
    job = BackupJob(
        name="gamma",
        source=_source(tmp_path, "g"),
        destinations=[LocalDestination(path=str(root))],
        retention=RetentionPolicy(keep_last=1),
    )
    dest = LocalDestination(path=str(root)).get_adapter()
    backup_database(job)
    # a backup whose manifest is damaged: never deleted, reported
    damaged = "gamma/gamma_g_20200101T000000Z-aaaaaa.sqlite.zst"
    dest.write_bytes(damaged, b"data")
    dest.write_bytes(f"{damaged}.meta.json", b"{not json")
    # an uncommitted leftover of this job, two days old: removed; a fresh one and a foreign file: kept
    stale = "gamma/gamma_g_20200102T000000Z-bbbbbb.sqlite.zst"
    fresh = "gamma/gamma_g_20200103T000000Z-cccccc.sqlite.zst"
    foreign = "gamma/notes.txt"
    for path in (stale, fresh, foreign):
        dest.write_bytes(path, b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(root / stale, (two_days_ago, two_days_ago))
    os.utime(root / foreign, (two_days_ago, two_days_ago))

    newest = backup_database(job).databases[0].path
    [outcome] = apply_retention(job)
    assert outcome.unreadable == [f"{damaged}.meta.json"]
    assert dest.exists(damaged)
    assert not dest.exists(stale)
    assert dest.exists(fresh) and dest.exists(foreign)
    assert _paths(dest, "gamma") == [newest]
