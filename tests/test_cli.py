"""The prefect-db-backup command line on a saved job: run, list, lock, unlock, retention, restore, decrypt."""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest
from prefect_db_backup.blocks import (
    BackupJob,
    EncryptionProfile,
    LocalDestination,
    RetentionPolicy,
    SQLiteSource,
)
from prefect_db_backup.cli import app
from typer.testing import CliRunner

pytestmark = pytest.mark.usefixtures("prefect_server")
runner = CliRunner()


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def saved_job(tmp_path: Path) -> tuple[str, Path, EncryptionProfile]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "app.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("row",)] * 1000)
    key = EncryptionProfile.generate()
    BackupJob(
        name=name,
        source=SQLiteSource(path=str(db)),
        destinations=[LocalDestination(path=str(tmp_path / "backups"))],
        compression="zstd",
        encryption=key,
        retention=RetentionPolicy(keep_last=1),
    ).save(name)
    return name, tmp_path, key


def _listed(name: str) -> list[str]:
    return [
        line.split()[-1]
        for line in _invoke("list", name).splitlines()
        if line.strip().endswith((".enc", "locked"))
    ]


def test_run_list_lock_retention_restore(saved_job: tuple[str, Path, EncryptionProfile]) -> None:
    name, tmp_path, key = saved_job
    out = _invoke("run", name, "--lock")
    assert "status: success" in out
    first = next(line.split()[-1] for line in out.splitlines() if ".sqlite.zst.enc" in line)
    _invoke("run", name)
    listing = _invoke("list", name)
    assert f"{first} locked" in listing
    assert listing.count(".sqlite.zst.enc") == 2, "keep_last=1 keeps the newest, and the locked one"

    _invoke("unlock", name, first)
    plan = _invoke("retention", name, "--dry-run")
    assert f"would delete {first}" in plan
    assert first in _invoke("list", name)
    _invoke("retention", name)
    assert first not in _invoke("list", name)

    [remaining] = [line.split()[-1] for line in _invoke("list", name).splitlines() if ".enc" in line]
    restored = tmp_path / "restored.sqlite"
    (tmp_path / "app.sqlite").rename(tmp_path / "original.sqlite")
    _invoke("restore", name, remaining)
    with sqlite3.connect(tmp_path / "app.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)

    key_file = tmp_path / "key.txt"
    key_file.write_text(key.key.get_secret_value())
    encrypted = tmp_path / "backups" / remaining
    _invoke("decrypt", "--key-file", str(key_file), str(encrypted), str(tmp_path / "plain.zst"))
    subprocess.run(["zstd", "-q", "-d", str(tmp_path / "plain.zst"), "-o", str(restored)], check=True)
    with sqlite3.connect(restored) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)


def test_unknown_job_is_a_clear_error() -> None:
    result = runner.invoke(app, ["list", f"missing-{uuid.uuid4().hex[:6]}"])
    assert result.exit_code != 0
    assert "no saved backup job named" in result.output


def test_keygen_prints_a_key_the_profile_accepts() -> None:
    text = _invoke("keygen").strip()
    assert text.startswith("pdbk1:")
    assert EncryptionProfile(key=text).key_id
