"""SFTP destination against a real OpenSSH sshd on loopback (see servers/sshd.py)."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_infrastructure
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.destinations.sftp import SFTPAdapter
from prefect_db_backup.adapters.testing.destination_suite import DestinationSuite
from prefect_db_backup.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectionFailedError,
    PermanentError,
)
from servers import sshd


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[sshd.SSHServer]:
    require_infrastructure(sshd.available(), "OpenSSH sshd (Debian openssh-server) run as root")
    with sshd.run_sshd() as server:
        yield server


def _adapter(server: sshd.SSHServer, **overrides: object) -> SFTPAdapter:
    args: dict[str, object] = {
        "port": server.port,
        "username": server.username,
        "password": server.password,
        "root": server.fresh_root(),
        "known_hosts": server.known_hosts,
    }
    args.update(overrides)
    return SFTPAdapter("127.0.0.1", **args)  # type: ignore[arg-type]


class TestSFTPConformance(DestinationSuite):
    large_listing = True  # READDIR pages of ~100 entries: 1,100 files list in well under a second

    @pytest.fixture
    def destination(self, sftp_server: sshd.SSHServer) -> Iterator[Destination]:
        with _adapter(sftp_server) as dest:
            yield dest

    @pytest.fixture
    def secrets(self, sftp_server: sshd.SSHServer) -> list[str]:
        return [sftp_server.password]

    @pytest.fixture
    def storage_root(self, destination: SFTPAdapter) -> Path:
        return Path(destination.root)  # sshd serves this machine's file system


def test_encrypted_key_login_with_pinned_host_key_and_nested_root(sftp_server: sshd.SSHServer) -> None:
    root = sftp_server.fresh_root() + "/nested/deeper"  # created on the first upload (mkdir -p)
    with SFTPAdapter(
        "127.0.0.1",
        port=sftp_server.port,
        username=sftp_server.username,
        private_key=sftp_server.encrypted_private_key,
        private_key_passphrase=sftp_server.key_passphrase,
        root=root,
        host_key=sftp_server.host_key_line,
    ) as dest:
        assert list(dest.list()) == []
        dest.write_bytes("a/b.bin", b"key login")
        assert dest.read_bytes("a/b.bin") == b"key login"
        assert [(i.path, i.size) for i in dest.list()] == [("a/b.bin", 9)]
        dest.test_connection()


def test_wrong_password_is_an_authentication_error(sftp_server: sshd.SSHServer) -> None:
    with _adapter(sftp_server, password="wrong") as dest, pytest.raises(AuthenticationError) as caught:
        dest.write_bytes("x", b"x")
    assert "wrong" not in str(caught.value)
    assert "refused the login" in str(caught.value)


def test_unencrypted_key_login(sftp_server: sshd.SSHServer) -> None:
    with _adapter(sftp_server, password=None, private_key=sftp_server.private_key) as dest:
        dest.test_connection()


def test_encrypted_key_without_passphrase_is_a_configuration_error(sftp_server: sshd.SSHServer) -> None:
    with pytest.raises(ConfigurationError, match="passphrase"):
        _adapter(sftp_server, password=None, private_key=sftp_server.encrypted_private_key)


def test_host_key_mismatch_is_refused(sftp_server: sshd.SSHServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong_line = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sftp_server.port} {wrong_line}\n")
    for overrides in ({"known_hosts": known}, {"known_hosts": None, "host_key": wrong_line}):
        with _adapter(sftp_server, **overrides) as dest, pytest.raises(AuthenticationError, match="host key"):
            dest.test_connection()


def test_unknown_host_is_refused_by_default(sftp_server: sshd.SSHServer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with (
        _adapter(sftp_server, known_hosts=empty) as dest,
        pytest.raises(AuthenticationError, match="host key"),
    ):
        dest.test_connection()


def test_pinned_fingerprint(sftp_server: sshd.SSHServer) -> None:
    blob = base64.b64decode(sftp_server.host_key_line.split()[1])
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    with _adapter(sftp_server, known_hosts=None, host_key=fingerprint) as dest:
        dest.test_connection()
    with (
        _adapter(sftp_server, known_hosts=None, host_key="SHA256:" + "A" * 43) as dest,
        pytest.raises(AuthenticationError, match="host key"),
    ):
        dest.test_connection()


def test_insecure_opt_out_warns(sftp_server: sshd.SSHServer, caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING),
        _adapter(sftp_server, known_hosts=None, insecure_skip_host_key_check=True) as dest,
    ):
        dest.test_connection()
    assert "host key check is DISABLED" in caplog.text


def test_unreachable_server_is_retryable() -> None:
    port = sshd.free_port()
    with (
        SFTPAdapter(
            "127.0.0.1", port=port, username="u", password="p", insecure_skip_host_key_check=True, timeout=3
        ) as dest,
        pytest.raises(ConnectionFailedError),
    ):
        dest.stat("x")


def test_describe(sftp_server: sshd.SSHServer) -> None:
    dest = SFTPAdapter("127.0.0.1", port=2222, username="bob", password="secret", root="/backups")
    assert dest.describe() == "sftp://bob@127.0.0.1:2222/backups"
    assert "secret" not in dest.describe()
    rel = SFTPAdapter("h", username="bob", password="secret", root="backups")
    assert rel.describe() == "sftp://bob@h:22/~/backups"


def test_reconnects_after_the_connection_drops(sftp_server: sshd.SSHServer) -> None:
    with _adapter(sftp_server) as dest:
        dest.write_bytes("a", b"1")
        assert dest._client is not None
        dest._client.get_transport().close()  # type: ignore[union-attr]
        assert dest.read_bytes("a") == b"1"
        assert [i.path for i in dest.list()] == ["a"]


def test_partial_file_of_a_dead_writer_is_not_listed(sftp_server: sshd.SSHServer) -> None:
    with _adapter(sftp_server) as dest:
        writer = dest.open_writer("job/x.dump")
        writer.write(b"half")
        # Simulate a dead process: the connection goes away without abort.
        writer._sftp.get_channel().close()  # type: ignore[attr-defined,union-attr]
        dest.write_bytes("job/y.dump", b"ok")
        assert {i.path for i in dest.list()} == {"job/y.dump"}


def test_block_builds_a_verified_adapter(sftp_server: sshd.SSHServer) -> None:
    from prefect_db_backup.blocks.remote_destinations import SFTPDestination
    from pydantic import ValidationError

    root = sftp_server.fresh_root()
    block = SFTPDestination(
        host="127.0.0.1",
        port=sftp_server.port,
        username=sftp_server.username,
        password=sftp_server.password,
        root=root,
        known_hosts_path=str(sftp_server.known_hosts),
    )
    with block.get_adapter() as dest:
        assert (
            dest.describe()
            == block.describe()
            == f"sftp://{sftp_server.username}@127.0.0.1:{sftp_server.port}{root}"
        )
        dest.test_connection()
        dest.write_bytes("b.bin", b"block")
        assert dest.read_bytes("b.bin") == b"block"
    assert sftp_server.password not in repr(block)
    with pytest.raises(ValidationError, match="password or private_key"):
        SFTPDestination(host="h", username="u")


def test_download_memory_does_not_grow_with_size(sftp_server: sshd.SSHServer) -> None:
    """paramiko's prefetch leaves stray replies in a long-lived handle; windows must not accumulate them."""
    import tracemalloc

    from prefect_db_backup.adapters.destinations.sftp import READ_WINDOW
    from prefect_db_backup.adapters.testing.destination_suite import stream_upload

    with _adapter(sftp_server) as dest:
        stream_upload(dest, "big.bin", 32 << 20, seed=5)
        tracemalloc.start()
        try:
            with dest.open_reader("big.bin") as reader:
                while reader.read(1 << 20):
                    pass
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 3 * READ_WINDOW + (2 << 20)


def test_overwrite_without_posix_rename_falls_back(
    sftp_server: sshd.SSHServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import paramiko

    def unsupported(self: paramiko.SFTPClient, old: str, new: str) -> None:
        raise OSError("Operation unsupported")

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", unsupported)
    with _adapter(sftp_server) as dest, caplog.at_level(logging.WARNING):
        dest.write_bytes("a.bin", b"old")
        dest.write_bytes("a.bin", b"newer", overwrite=True)
        assert dest.read_bytes("a.bin") == b"newer"
        with pytest.raises(ConfigurationError):
            dest.write_bytes("a.bin", b"refused")
        assert [(i.path, i.size) for i in dest.list()] == [("a.bin", 5)]
    assert "lacks posix-rename" in caplog.text


def test_refused_upload_is_classified_and_leaves_nothing(sftp_server: sshd.SSHServer) -> None:
    """An upload the server refuses (here: the parent is a file) fails with a permanent error."""
    with _adapter(sftp_server) as dest:
        dest.write_bytes("file", b"x")
        with pytest.raises(PermanentError), dest.open_writer("file/child.bin") as writer:
            writer.write(b"data")
            writer.commit()
        assert [i.path for i in dest.list()] == ["file"]


def test_connection_drop_mid_upload_is_retryable_and_cleaned_up(sftp_server: sshd.SSHServer) -> None:
    from pathlib import Path

    with _adapter(sftp_server) as dest:
        dest.write_bytes("before.bin", b"ok")
        with pytest.raises(ConnectionFailedError), dest.open_writer("job/x.dump") as writer:
            writer.write(b"x" * (1 << 20))
            dest._client.get_transport().close()  # type: ignore[union-attr]  # the network drops
            for _ in range(64):
                writer.write(b"x" * (1 << 20))
            writer.commit()
        # abort() reconnected to remove the temporary file; the adapter works again.
        assert [i.path for i in dest.list()] == ["before.bin"]
        root = Path(dest.root)
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["before.bin"]
