"""A private ``redis-server`` for tests: loopback, free port, nothing persisted, stopped afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


class RedisServer:
    """A running ``redis-server`` process on 127.0.0.1.

    Attributes:
        port: Its TCP port.
        password: The ``requirepass`` password, or None.
        directory: Its private working directory.
    """

    def __init__(self, port: int, password: str | None, directory: Path, proc: subprocess.Popen[bytes]):
        self.port = port
        self.password = password
        self.directory = directory
        self.proc = proc

    def client(self, db: int = 0):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[RedisServer]:
    """Start a throwaway redis-server; yield it; stop it and remove its directory."""
    directory = Path(tempfile.mkdtemp(prefix="pdb-redis-"))
    port = free_port()
    argv = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        # Serve `redis-cli --rdb` at once (the default waits 5 s for more replicas to share the transfer).
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        str(directory),
        "--daemonize",
        "no",
        "--logfile",
        str(directory / "redis.log"),
    ]
    if password:
        argv += ["--requirepass", password]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, password, directory, proc)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                server.client().ping()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start: {(directory / 'redis.log').read_text(errors='replace')}"
                    ) from None
                time.sleep(0.05)
        yield server
    finally:
        server.stop()
