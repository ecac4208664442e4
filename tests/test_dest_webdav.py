"""WebDAV destination against a real WsgiDAV server in a child process (see servers/webdav.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.destinations.webdav import WebDAVAdapter
from prefect_db_backup.adapters.testing.destination_suite import DestinationSuite
from prefect_db_backup.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    PermanentError,
)
from servers import webdav
from servers.sshd import free_port


@pytest.fixture(scope="session")
def webdav_server() -> Iterator[webdav.WebDAVServer]:
    require_infrastructure(webdav.available(), "PyPI wsgidav and cheroot")
    with webdav.run_webdav() as server:
        yield server


def _adapter(server: webdav.WebDAVServer, **overrides: object) -> WebDAVAdapter:
    args: dict[str, object] = {
        "username": server.username,
        "password": server.password,
        "root": server.fresh_root(),
    }
    args.update(overrides)
    return WebDAVAdapter(server.url, **args)  # type: ignore[arg-type]


class TestWebDAVConformance(DestinationSuite):
    large_listing = True  # one PROPFIND Depth 1 per folder returns all 1,100 entries at once

    @pytest.fixture
    def destination(self, webdav_server: webdav.WebDAVServer) -> Iterator[Destination]:
        with _adapter(webdav_server) as dest:
            yield dest

    @pytest.fixture
    def secrets(self, webdav_server: webdav.WebDAVServer) -> list[str]:
        return [webdav_server.password]

    @pytest.fixture
    def storage_root(self, webdav_server: webdav.WebDAVServer, destination: WebDAVAdapter) -> Path:
        return webdav_server.data_dir / destination.root


def test_root_is_created_on_first_upload(webdav_server: webdav.WebDAVServer) -> None:
    root = webdav_server.fresh_root() + "/not/yet/there"
    with _adapter(webdav_server, root=root) as dest:
        assert list(dest.list()) == []
        dest.write_bytes("a/b.bin", b"x")
        assert [i.path for i in dest.list()] == ["a/b.bin"]
    assert (webdav_server.data_dir / root / "a" / "b.bin").read_bytes() == b"x"


def test_wrong_password_is_an_authentication_error(webdav_server: webdav.WebDAVServer) -> None:
    with _adapter(webdav_server, password="wrong-pw") as dest:
        with pytest.raises(AuthenticationError) as caught:
            dest.stat("x")
        assert "wrong-pw" not in str(caught.value)
        with pytest.raises(AuthenticationError):
            dest.write_bytes("x", b"data")


def test_server_gone_mid_upload_is_retryable_and_leaves_nothing(webdav_server: webdav.WebDAVServer) -> None:
    port = free_port()
    with WebDAVAdapter(f"http://127.0.0.1:{port}/", root="r", timeout=3) as dest:
        with pytest.raises(ConnectionFailedError):
            dest.stat("x")
        with pytest.raises(ConnectionFailedError):
            dest.write_bytes("x", b"data")


def test_url_validation_and_describe() -> None:
    with pytest.raises(ConfigurationError):
        WebDAVAdapter("ftp://h/")
    with pytest.raises(ConfigurationError):
        WebDAVAdapter("https://u:p@h/")
    dest = WebDAVAdapter("https://h/dav", username="u", password="pw", root="backups")
    assert dest.describe() == "https://u@h/dav/backups"


def test_block_builds_a_working_adapter(webdav_server: webdav.WebDAVServer) -> None:
    from prefect_db_backup.blocks.remote_destinations import WebDAVDestination
    from pydantic import ValidationError

    block = WebDAVDestination(
        url=webdav_server.url,
        username=webdav_server.username,
        password=webdav_server.password,
        root=webdav_server.fresh_root(),
    )
    with block.get_adapter() as dest:
        assert dest.describe() == block.describe()
        dest.test_connection()
        dest.write_bytes("b.bin", b"block")
        assert dest.read_bytes("b.bin") == b"block"
    assert webdav_server.password not in repr(block)
    with pytest.raises(ValidationError, match="root"):
        WebDAVDestination(url=webdav_server.url, root="a/../b")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, "AuthenticationError"),
        (403, "AuthenticationError"),
        (404, "NotFoundError"),
        (507, "StorageFullError"),
        (500, "TransientStorageError"),
        (503, "TransientStorageError"),
        (429, "TransientStorageError"),
        (400, "PermanentError"),
    ],
)
def test_status_classification(status: int, error: str) -> None:
    import httpx
    from prefect_db_backup import errors

    dest = WebDAVAdapter("https://h/dav/", username="u", password="secret-pw")
    with pytest.raises(getattr(errors, error)) as caught:
        dest._raise_status(httpx.Response(status), "upload", "x.dump")
    assert type(caught.value).__name__ == error
    assert "secret-pw" not in str(caught.value)
    assert errors.is_retryable(caught.value) == (error == "TransientStorageError")


def test_refused_upload_is_classified_and_leaves_nothing(webdav_server: webdav.WebDAVServer) -> None:
    """An upload the server refuses (here: the parent is a file) fails with a permanent error."""
    with _adapter(webdav_server) as dest:
        dest.write_bytes("file", b"x")
        with pytest.raises(PermanentError), dest.open_writer("file/child.bin") as writer:
            writer.write(b"data")
            writer.commit()
        assert [i.path for i in dest.list()] == ["file"]


def test_server_dying_mid_upload_is_retryable() -> None:
    import os
    import signal

    require_infrastructure(webdav.available(), "PyPI wsgidav and cheroot")
    with webdav.run_webdav() as server, _adapter(server, timeout=5) as dest:
        dest.write_bytes("before.bin", b"ok")
        with pytest.raises(ConnectionFailedError), dest.open_writer("job/x.dump") as writer:
            writer.write(b"x" * (1 << 20))
            os.kill(server.pid, signal.SIGKILL)
            for _ in range(64):
                writer.write(b"x" * (1 << 20))
            writer.commit()
