"""A private ``nx-27017`` server (MongoDB wire protocol over SQLite) for tests.

It is an emulator, not mongod: no authentication, no Decimal128, its own index names, collection options
and views not kept. Tests compare only what it can represent.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _nx_binary() -> str | None:
    candidate = Path(sys.executable).parent / "nx-27017"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nx-27017")


def available() -> bool:
    return _nx_binary() is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MongoServer:
    port: int
    directory: Path

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def client(self):  # type: ignore[no-untyped-def]
        from pymongo import MongoClient

        return MongoClient(self.uri, serverSelectionTimeoutMS=5000)


@contextlib.contextmanager
def mongo_server() -> Iterator[MongoServer]:
    """Start nx-27017 on a free loopback port with a private data directory; stop and remove it after."""
    binary = _nx_binary()
    if binary is None:
        raise RuntimeError("nx-27017 is not installed")
    directory = Path(tempfile.mkdtemp(prefix="pdb-nx-"))
    port = free_port()
    data = directory / "data"
    data.mkdir()
    argv = [
        binary,
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
        "-p",
        str(port),
        "--log-file",
        str(directory / "nx.log"),
        "--pid-file",
        str(directory / "nx.pid"),
    ]
    proc = subprocess.Popen(
        argv, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    server = MongoServer(port, directory)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nx-27017 did not start") from None
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
