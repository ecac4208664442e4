"""Benchmark: plan retention over 100,000 backups (hourly for about 11.4 years) with a mixed policy.

Run: .venv/bin/python bench/retention_plan.py [--count N] [--timezone Europe/Berlin]
Target: planning takes under one second. Prints the best and median of several runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from prefect_db_backup.retention.policy import BackupRecord, RetentionRules, plan_retention


def build_history(count: int, seed: int = 7) -> tuple[list[BackupRecord], datetime]:
    rng = random.Random(seed)
    start = datetime(2015, 6, 1, tzinfo=UTC)
    backups = []
    for i in range(count):
        # Hourly backups that start a few minutes past the hour, jittered, a few of them locked.
        created = start + timedelta(hours=i, seconds=rng.randrange(0, 900))
        backups.append(
            BackupRecord(
                backup_id=f"job/job_app_{created:%Y%m%dT%H%M%S}_{i:06d}.dump.zst.enc",
                created_at=created,
                locked=rng.random() < 0.001,
            )
        )
    rng.shuffle(backups)  # listing order from storage is arbitrary
    now = start + timedelta(hours=count, minutes=30)
    return backups, now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--timezone", default="Europe/Berlin")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    backups, now = build_history(args.count)
    rules = RetentionRules(
        keep_within=timedelta(days=2),
        keep_last=10,
        hourly=48,
        daily=30,
        weekly=52,
        monthly=24,
        yearly=20,
        min_keep=5,
        timezone=args.timezone,
    )
    span_years = (max(b.created_at for b in backups) - min(b.created_at for b in backups)).days / 365.25
    timings = []
    cpu = []
    plan = None
    for _ in range(args.runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        plan = plan_retention(rules, backups, now)
        timings.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    assert plan is not None
    print(f"backups: {len(backups):,} over {span_years:.1f} years; policy: {rules.describe()}")
    print(f"kept {len(plan.keep):,}, deleted {len(plan.delete):,}")
    print(
        f"plan_retention: best {min(timings):.3f} s, median {statistics.median(timings):.3f} s "
        f"over {args.runs} runs (target < 1 s); CPU time best {min(cpu):.3f} s (wall time suffers on a "
        "busy machine, CPU time much less)"
    )


if __name__ == "__main__":
    main()
