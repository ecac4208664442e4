"""FTP and FTPS destination against real pyftpdlib servers in child processes (see servers/ftpd.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.destinations.ftp import FTPAdapter
from prefect_db_backup.adapters.testing.destination_suite import DestinationSuite
from prefect_db_backup.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    PermanentError,
)
from servers import ftpd


@pytest.fixture(scope="session")
def ftp_server() -> Iterator[ftpd.FTPServer]:
    require_infrastructure(ftpd.available(), "PyPI pyftpdlib")
    with ftpd.run_ftpd() as server:
        yield server


@pytest.fixture(scope="session")
def ftps_server() -> Iterator[ftpd.FTPServer]:
    require_infrastructure(ftpd.available(tls=True), "PyPI pyftpdlib and pyopenssl")
    with ftpd.run_ftpd(tls=True) as server:
        yield server


def _adapter(server: ftpd.FTPServer, **overrides: object) -> FTPAdapter:
    args: dict[str, object] = {
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "root": server.fresh_root(),
        "tls": server.tls,
        "ca_file": str(server.cafile) if server.cafile else None,
        "timeout": 20,
    }
    args.update(overrides)
    return FTPAdapter("127.0.0.1", **args)  # type: ignore[arg-type]


class TestFTPConformance(DestinationSuite):
    large_listing = True  # one MLSD transfer per folder: 1,100 entries list in milliseconds

    @pytest.fixture
    def destination(self, ftp_server: ftpd.FTPServer) -> Iterator[Destination]:
        with _adapter(ftp_server) as dest:
            yield dest

    @pytest.fixture
    def secrets(self, ftp_server: ftpd.FTPServer) -> list[str]:
        return [ftp_server.password]

    @pytest.fixture
    def storage_root(self, ftp_server: ftpd.FTPServer, destination: FTPAdapter) -> Path:
        return ftp_server.data_dir / destination.root.lstrip("/")


class TestFTPSConformance(DestinationSuite):
    large_listing = True

    @pytest.fixture
    def destination(self, ftps_server: ftpd.FTPServer) -> Iterator[Destination]:
        with _adapter(ftps_server) as dest:
            yield dest

    @pytest.fixture
    def secrets(self, ftps_server: ftpd.FTPServer) -> list[str]:
        return [ftps_server.password]

    @pytest.fixture
    def storage_root(self, ftps_server: ftpd.FTPServer, destination: FTPAdapter) -> Path:
        return ftps_server.data_dir / destination.root.lstrip("/")


class TestFTPListFallbackConformance(DestinationSuite):
    """Servers without MLSD (vsftpd): listings parse LIST output, stat uses SIZE."""

    large_listing = True
    large_object_size = 8 << 20  # the 100 MiB case runs above; this class checks the LIST/SIZE paths

    @pytest.fixture
    def destination(self, ftp_server: ftpd.FTPServer) -> Iterator[Destination]:
        with _adapter(ftp_server, use_mlsd=False) as dest:
            yield dest


def test_empty_listings_over_ftps_are_reliable(ftps_server: ftpd.FTPServer) -> None:
    """Listing empty folders over FTPS used to fail at random (SHUTDOWN_WHILE_IN_INIT)."""
    with _adapter(ftps_server) as dest:
        dest.write_bytes("sub/x", b"")
        dest.delete("sub/x")
        for _ in range(60):
            assert list(dest.list()) == []
        dest.write_bytes("empty", b"")
        for _ in range(30):
            assert dest.read_bytes("empty") == b""


def test_wrong_password_is_an_authentication_error(ftp_server: ftpd.FTPServer) -> None:
    with _adapter(ftp_server, password="wrong-pw") as dest, pytest.raises(AuthenticationError) as caught:
        dest.stat("x")
    assert "wrong-pw" not in str(caught.value)


def test_untrusted_certificate_is_refused(ftps_server: ftpd.FTPServer) -> None:
    with _adapter(ftps_server, ca_file=None) as dest, pytest.raises(AuthenticationError, match="certificate"):
        dest.stat("x")


def test_plain_client_against_tls_only_server_fails_clearly(ftps_server: ftpd.FTPServer) -> None:
    with (
        _adapter(ftps_server, tls=False, ca_file=None) as dest,
        pytest.raises(ConfigurationError, match="tls"),
    ):
        dest.stat("x")


def test_unreachable_server_is_retryable() -> None:
    with (
        FTPAdapter("127.0.0.1", port=ftpd.free_port(), timeout=3) as dest,
        pytest.raises(ConnectionFailedError),
    ):
        dest.stat("x")


def test_describe() -> None:
    assert FTPAdapter("h", port=2121, username="u", password="pw", root="/b", tls=True).describe() == (
        "ftps://u@h:2121/b"
    )


def test_reader_closed_early_does_not_poison_the_pool(ftp_server: ftpd.FTPServer) -> None:
    with _adapter(ftp_server) as dest:
        dest.write_bytes("big", b"x" * (4 << 20))
        with dest.open_reader("big") as reader:
            assert reader.read(10) == b"x" * 10
        assert dest.read_bytes("big") == b"x" * (4 << 20)
        assert [i.path for i in dest.list()] == ["big"]


def test_block_builds_a_working_adapter(ftps_server: ftpd.FTPServer) -> None:
    from prefect_db_backup.blocks.remote_destinations import FTPDestination

    root = ftps_server.fresh_root()
    block = FTPDestination(
        host="127.0.0.1",
        port=ftps_server.port,
        username=ftps_server.username,
        password=ftps_server.password,
        root=root,
        ca_file=str(ftps_server.cafile),
    )
    with block.get_adapter() as dest:
        assert dest.describe() == block.describe()
        dest.test_connection()
        dest.write_bytes("b.bin", b"block")
        assert dest.read_bytes("b.bin") == b"block"
    assert ftps_server.password not in repr(block)


def test_list_parser_handles_common_unix_formats() -> None:
    from prefect_db_backup.adapters.destinations.ftp import _parse_list

    vsftpd = "-rw-------    1 1000     1000         1234 Nov 28 13:15 job 1 bäckup.dump"
    old = "-rw-r--r--   1 owner group  99 Jan  3  2024 old.dump"
    folder = "drwxr-xr-x    2 ftp      ftp          4096 Nov 28 13:15 sub dir"
    link = "lrwxrwxrwx    1 ftp      ftp             7 Nov 28 13:15 latest -> x.dump"
    entry = _parse_list(vsftpd)
    assert entry is not None and (entry.name, entry.size, entry.is_dir) == ("job 1 bäckup.dump", 1234, False)
    entry = _parse_list(old)
    assert entry is not None and (entry.name, entry.size) == ("old.dump", 99)
    entry = _parse_list(folder)
    assert entry is not None and (entry.name, entry.is_dir) == ("sub dir", True)
    assert _parse_list(link) is None
    assert _parse_list("total 12") is None


def test_refused_upload_start_is_classified(ftp_server: ftpd.FTPServer) -> None:
    """A STOR the server refuses (here: the parent is a file) fails cleanly, leaving nothing behind."""
    with _adapter(ftp_server) as dest:
        dest.write_bytes("file", b"x")
        with pytest.raises(PermanentError):
            dest.open_writer("file/child.bin")
        assert [i.path for i in dest.list()] == ["file"]


def test_active_mode(ftp_server: ftpd.FTPServer) -> None:
    with _adapter(ftp_server, passive=False) as dest:
        dest.write_bytes("a/active.bin", b"active mode")
        assert dest.read_bytes("a/active.bin") == b"active mode"
        assert [(i.path, i.size) for i in dest.list()] == [("a/active.bin", 11)]


def test_only_the_known_tls_quirk_is_tolerated_and_only_when_asked() -> None:
    """The FTPS empty-transfer quirk (SHUTDOWN_WHILE_IN_INIT) is tolerated only where verified otherwise."""
    import ssl

    from prefect_db_backup.adapters.destinations.ftp import _close_data

    class FakeTLS(ssl.SSLSocket):
        def __init__(self, error: ssl.SSLError) -> None:  # no real socket behind it
            self.error = error
            self.was_closed = False

        def unwrap(self) -> None:  # type: ignore[override]
            raise self.error

        def close(self) -> None:
            self.was_closed = True

    quirk = ssl.SSLError(1, "[SSL: SHUTDOWN_WHILE_IN_INIT] shutdown while in init (_ssl.c:2706)")
    other = ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] bad record mac")
    sock = FakeTLS(quirk)
    _close_data(sock, tolerate_init_shutdown=True)
    assert sock.was_closed
    for error, tolerate in ((quirk, False), (other, True)):
        sock = FakeTLS(error)
        with pytest.raises(ssl.SSLError):
            _close_data(sock, tolerate_init_shutdown=tolerate)
        assert sock.was_closed


def test_connection_drop_mid_upload_is_retryable_and_cleaned_up(ftps_server: ftpd.FTPServer) -> None:
    import socket

    with _adapter(ftps_server) as dest:
        dest.write_bytes("before.bin", b"ok")
        with pytest.raises(ConnectionFailedError), dest.open_writer("job/x.dump") as writer:
            writer.write(b"x" * (1 << 20))
            # The network drops: both connections of the writer die under it.
            writer._conn.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            writer._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            for _ in range(64):
                writer.write(b"x" * (1 << 20))
            writer.commit()
        assert [i.path for i in dest.list()] == ["before.bin"]
        root = ftps_server.data_dir / dest.root.lstrip("/")
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["before.bin"]
