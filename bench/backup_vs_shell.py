"""Benchmark: our backup flow against the plain shell pipeline, in one run, on the same databases.

    python bench/backup_vs_shell.py [--large-scale 100] [--rounds 3] [--s3]

For a ~1 GB database (plain dump) and a tenth-size one it times, alternately,

    shell:  pg_dump -Fc -Z0 DB | zstd -3 -T2 > FILE
    ours:   the backup flow, zstd level 3 + AES-256-GCM, to a local folder (and to S3 on SeaweedFS with --s3)

and reports medians, the ratio ours/shell (for the whole flow, and for the dump-and-upload step alone), and
the peak RSS of the backup process (its own ``ru_maxrss``; pg_dump and the Prefect server are other
processes). The flow runs against a Prefect server started here, as a worker's flow process would; in
ephemeral mode (no server configured) the backup process also loads Prefect's server code, about 70 MB
more. Targets (issue 2): ratio <= 1.15, peak <= 200 MB at both sizes, the larger within 15% of the
smaller; (issue 3) S3 on SeaweedFS at most 1.2 times local. Compare ratios from one run only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pgdata import ensure_database, plain_dump_size

HERE = Path(__file__).parent
API_URL = ""


def time_shell(database: str, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"pg_dump -h 127.0.0.1 -U postgres -Fc -Z0 {database} | zstd -q -3 -T2 > {out}",
        ],
        check=True,
    )
    return time.perf_counter() - started


def run_ours(database: str, workdir: Path, s3: dict[str, str] | None) -> dict[str, float]:
    target = ["--s3", json.dumps(s3)] if s3 else ["--local", str(workdir / "ours")]
    proc = subprocess.run(
        [sys.executable, str(HERE / "backup_child.py"), "--database", database, *target],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": API_URL},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_database(database: str, rounds: int, s3: dict[str, str] | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="pdb-bench-") as tmp:
        workdir = Path(tmp)
        shell, ours, dump, rss = [], [], [], []
        run_ours(database, workdir, s3)  # warm the page cache and the code paths once
        for _ in range(rounds):
            shell.append(time_shell(database, workdir / "shell.zst"))
            result = run_ours(database, workdir, s3)
            ours.append(result["seconds"])
            dump.append(result["dump_seconds"])
            rss.append(result["maxrss_mib"])
            shutil.rmtree(workdir / "ours", ignore_errors=True)
        shell_size = (workdir / "shell.zst").stat().st_size
    return {
        "database": database,
        "stored_size": result["stored_size"],
        "shell_zst_size": shell_size,
        "shell_s": statistics.median(shell),
        "ours_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(shell),
        "dump_s": statistics.median(dump),
        "dump_ratio": statistics.median(dump) / statistics.median(shell),
        "peak_rss_mib": max(rss),
        "runs": {"shell": shell, "ours": ours, "dump": dump},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large-scale", type=int, default=100, help="pgbench scale of the large database")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="also back up to S3 on a local SeaweedFS")
    args = parser.parse_args()

    global API_URL
    with prefect_server() as API_URL:
        run(args)


@contextlib.contextmanager
def prefect_server() -> Iterator[str]:
    """A Prefect server in a temporary home on a free loopback port; yields its API URL."""
    home = Path(tempfile.mkdtemp(prefix="pdb-bench-prefect-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the Prefect server did not start")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    sizes = {"bench_pdb_small": max(1, args.large_scale // 10), "bench_pdb_large": args.large_scale}
    report = []
    for name, scale in sizes.items():
        ensure_database(name, scale, mixed_rows=scale * 10_000)
        plain = plain_dump_size(name)
        row = bench_database(name, args.rounds, None)
        row["plain_dump_bytes"] = plain
        row["destination"] = "local"
        report.append(row)
        print(json.dumps(row), flush=True)
    if args.s3:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from servers.seaweedfs import start_seaweedfs

        with start_seaweedfs() as server:
            s3 = {
                "endpoint": server.endpoint,
                "bucket": server.new_bucket(),
                "access_key": server.access_key,
                "secret_key": server.secret_key,
            }
            for name in sizes:
                row = bench_database(name, args.rounds, s3)
                row["destination"] = "s3"
                report.append(row)
                print(json.dumps(row), flush=True)
    print("\ndatabase          dest   shell s  flow s  ratio  dump s  ratio  peak RSS MiB")
    for row in report:
        print(
            f"{row['database']:17} {row['destination']:5} {row['shell_s']:8.2f} {row['ours_s']:7.2f}"
            f" {row['ratio']:6.3f} {row['dump_s']:7.2f} {row['dump_ratio']:6.3f} {row['peak_rss_mib']:13.1f}"
        )


if __name__ == "__main__":
    main()
