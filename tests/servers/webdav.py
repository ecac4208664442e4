"""A WsgiDAV WebDAV server (cheroot, basic auth through ``simple_dc``) on 127.0.0.1, in a child process.

CI needs: PyPI ``wsgidav`` and ``cheroot`` (test extras).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "backup"


def available() -> bool:
    """Tell whether wsgidav and cheroot can be imported."""
    try:
        import cheroot.wsgi  # noqa: F401
        import wsgidav.wsgidav_app  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class WebDAVServer:
    """A running test WebDAV server.

    Attributes:
        url: Base URL (``http://127.0.0.1:PORT/``).
        username: Basic-auth user.
        password: Its password.
        data_dir: Local folder the server shares at ``/``.
        pid: Process id of the server (tests may kill it to simulate an outage).
    """

    url: str
    username: str
    password: str
    data_dir: Path
    pid: int

    def fresh_root(self) -> str:
        """Create a new empty collection and return its path below the base URL."""
        name = f"root-{uuid.uuid4().hex[:12]}"
        (self.data_dir / name).mkdir()
        return name


@contextlib.contextmanager
def run_webdav() -> Iterator[WebDAVServer]:
    """Start the server in a child process; stop it and remove its files on exit."""
    base = Path(tempfile.mkdtemp(prefix="pdb-webdav-"))
    data_dir = base / "data"
    data_dir.mkdir()
    password = uuid.uuid4().hex
    port_file = base / "port"
    args = [sys.executable, __file__, str(data_dir), str(port_file)]
    log = open(base / "webdav.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args,
        env={**os.environ, "WEBDAV_PASSWORD": password},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"webdav server exited early: {(base / 'webdav.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("webdav server did not start within 30s")
            time.sleep(0.05)
        port = int(port_file.read_text())
        yield WebDAVServer(
            url=f"http://127.0.0.1:{port}/", username=USER, password=password, data_dir=data_dir, pid=proc.pid
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _serve(data_dir: str, port_file: str) -> None:
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "host": "127.0.0.1",
        "port": 0,
        "provider_mapping": {"/": data_dir},
        "simple_dc": {"user_mapping": {"*": {USER: {"password": os.environ["WEBDAV_PASSWORD"]}}}},
        "http_authenticator": {
            "domain_controller": None,  # simple_dc
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "verbose": 1,
        "logging": {"enable_loggers": []},
        "property_manager": True,
        "lock_storage": True,
    }
    app = WsgiDAVApp(config)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=16)
    server.prepare()
    port = server.bind_addr[1]
    tmp = Path(port_file + ".tmp")
    tmp.write_text(json.dumps(port))
    tmp.rename(port_file)

    def stop(*_: object) -> None:
        os._exit(0)  # nothing to flush: files are written synchronously by each request

    signal.signal(signal.SIGTERM, stop)
    server.serve()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
