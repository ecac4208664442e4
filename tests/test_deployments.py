"""How users trigger jobs besides Python: block registration, prefect.yaml deployments, a worker, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from prefect_db_backup.blocks import BackupJob, LocalDestination, RetentionPolicy, SQLiteSource
from prefect_db_backup.inventory import take_inventory

ROOT = Path(__file__).resolve().parent.parent
PREFECT = [sys.executable, "-m", "prefect"]


def test_prefect_collections_entry_point_defines_every_block() -> None:
    [ours] = [ep for ep in entry_points(group="prefect.collections") if ep.name == "prefect_db_backup"]
    module = ours.load()
    assert len(module.__all__) == 14


@pytest.fixture
def api_env(prefect_server: None, tmp_path: Path) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_HOME": str(tmp_path / "home"),
        "COLUMNS": "250",
    }


def _prefect(args: list[str], env: dict[str, str], timeout: float = 180) -> str:
    proc = subprocess.run(
        PREFECT + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_block_register_module(api_env: dict[str, str]) -> None:
    out = _prefect(["block", "register", "-m", "prefect_db_backup"], api_env)
    assert "Successfully registered 14 blocks" in out, out
    listing = _prefect(["block", "type", "ls"], api_env)
    for slug in ("db-backup-job", "db-backup-encryption-key", "db-backup-s3-destination"):
        assert slug in listing


def test_prefect_yaml_deploys_and_a_worker_runs_the_backup(api_env: dict[str, str], tmp_path: Path) -> None:
    db = tmp_path / "app.sqlite"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    dest = tmp_path / "backups"
    BackupJob(
        name="nightly-app",
        source=SQLiteSource(path=str(db)),
        destinations=[LocalDestination(path=str(dest))],
        retention=RetentionPolicy(keep_last=3),
    ).save("nightly-app", overwrite=True)

    _prefect(["work-pool", "create", "db-backup", "--type", "process"], api_env)
    _prefect(["--no-prompt", "deploy", "--all"], api_env)
    backup = _prefect(["deployment", "inspect", "backup/nightly-app"], api_env)
    assert "flows/backup.py:backup_database" in backup and "0 2 * * *" in backup
    retention = _prefect(["deployment", "inspect", "apply-retention/nightly-app-retention"], api_env)
    assert "flows/retention.py:apply_retention" in retention

    run_name = f"test-{uuid.uuid4().hex[:6]}"
    _prefect(
        [
            "deployment",
            "run",
            "backup/nightly-app",
            "--param",
            "job=nightly-app",
            "--flow-run-name",
            run_name,
        ],
        api_env,
    )
    _prefect(["worker", "start", "--pool", "db-backup", "--run-once"], api_env, timeout=300)
    [backup] = take_inventory(LocalDestination(path=str(dest)).get_adapter(), "nightly-app").committed
    assert backup.manifest.flow_run_id
    runs = _prefect(["flow-run", "ls", "--state", "COMPLETED"], api_env)
    assert run_name in runs
