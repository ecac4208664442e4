"""The embedded demo: back up a sample SQLite database on Prefect's ephemeral server, then prove it restores.

``prefect-db-backup demo`` (the README's first command) needs nothing but Python: it creates a sample
database, runs the real ``backup`` flow (zstd, AES-256-GCM, local folder ``./backups``), then decrypts,
decompresses and restores the backup and compares every row with the original.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.adapters.sources.sqlite import SQLiteAdapter
from prefect_db_backup.blocks import (
    BackupJob,
    EncryptionProfile,
    LocalDestination,
    RetentionPolicy,
    SQLiteSource,
)
from prefect_db_backup.errors import IntegrityError
from prefect_db_backup.flows.backup import backup_database
from prefect_db_backup.restore import restore_backup
from prefect_db_backup.units import format_bytes


def create_sample_database(path: Path, rows: int = 20_000) -> None:
    """Create (or recreate) a small shop database with customers, orders and binary attachments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(42)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE, note TEXT);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                                 total_cents INTEGER, placed_at TEXT, receipt BLOB);
            CREATE INDEX orders_customer ON orders(customer_id);
            CREATE VIEW big_orders AS SELECT * FROM orders WHERE total_cents > 50000;
            """
        )
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, ?, ?)",
            (
                (i, f"Customer {i} ünïcödé", f"c{i}@example.com", None if i % 7 else "VIP")
                for i in range(1, rows // 10 + 1)
            ),
        )
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            (
                (
                    i,
                    rng.randint(1, rows // 10),
                    rng.randint(100, 100_000),
                    f"2026-11-{rng.randint(1, 28):02d}",
                    rng.randbytes(64),
                )
                for i in range(1, rows + 1)
            ),
        )


def table_contents(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, ordered, for comparing two databases."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: db.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in tables}


def run_demo(workdir: Path) -> None:
    """Run the demo in ``workdir``: sample data in ``demo-data/``, backups in ``backups/``."""
    workdir = workdir.resolve()
    sample = workdir / "demo-data" / "shop.sqlite"
    backups = workdir / "backups"
    create_sample_database(sample)
    print(f"1. Created sample database {sample} ({format_bytes(sample.stat().st_size)})")

    key_file = workdir / "demo-data" / "demo.key"
    profile = EncryptionProfile.generate()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(profile.key.get_secret_value() + "\n")
    print(f"2. Generated a 256-bit key (id {profile.key_id}), kept in {key_file}")

    job = BackupJob(
        name="demo",
        source=SQLiteSource(path=str(sample)),
        destinations=[LocalDestination(path=str(backups))],
        compression="zstd",
        encryption=profile,
        retention=RetentionPolicy(keep_last=5),
    )
    print("3. Running the backup flow on Prefect (ephemeral server, no installation needed)...")
    result = backup_database(job)
    database = result.databases[0]
    digest = (database.sha256 or "")[:16]
    print(
        f"   {result.status}: {database.name} {format_bytes(database.plaintext_size)} -> "
        f"{format_bytes(database.stored_size)} stored, sha256 {digest}..."
    )
    print(f"   file: {backups / (database.path or '')}")

    restored = workdir / "demo-data" / "restored.sqlite"
    restored.unlink(missing_ok=True)
    restore_backup(
        LocalAdapter(root=backups),
        database.path or "",
        SQLiteAdapter(path=str(restored)),
        key=profile.key_bytes(),
    )
    if table_contents(restored) != table_contents(sample):
        raise IntegrityError("the restored demo database differs from the original")
    print(f"4. Verified, decrypted, decompressed and restored into {restored}: every row matches.")
    print(
        "   By hand: prefect-db-backup decrypt --key-file "
        f"{key_file} --decompress {backups / (database.path or '')} restored.sqlite"
    )
