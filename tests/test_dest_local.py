"""The local destination: the conformance suite plus what only a file system can show."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.destinations.local import LocalAdapter
from prefect_db_backup.adapters.registry import destination_class
from prefect_db_backup.adapters.testing.destination_suite import DestinationSuite
from prefect_db_backup.errors import ConfigurationError, NotFoundError, PermanentError, StorageFullError


class TestLocalConformance(DestinationSuite):
    large_listing = True

    @pytest.fixture
    def destination(self, tmp_path: Path) -> Destination:
        return LocalAdapter(root=tmp_path / "root")


def test_registry_builds_local(tmp_path: Path) -> None:
    assert destination_class("local") is LocalAdapter


# -- local-only behaviour -----------------------------------------------------------------------------------


def test_temporary_file_is_hidden_in_final_folder_and_private(tmp_path: Path) -> None:
    dest = LocalAdapter(tmp_path / "root")
    with dest.open_writer("job/backup.dump") as writer:
        writer.write(b"data")
        (temp,) = (tmp_path / "root" / "job").iterdir()
        assert temp.name.startswith(".backup.dump.") and temp.name.endswith(".partial")
        assert not temp.name.startswith("backup.dump")
        assert list(dest.list()) == []
        writer.commit()
    final = tmp_path / "root" / "job" / "backup.dump"
    assert sorted(p.name for p in final.parent.iterdir()) == ["backup.dump"]
    assert final.stat().st_mode & 0o777 == 0o600


def test_commit_fsyncs_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = LocalAdapter(tmp_path / "root")
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    dest.write_bytes("a/b.bin", b"x")
    folder = str(tmp_path / "root" / "a")
    file_syncs = [p for p in synced if ".partial" in p]
    assert file_syncs, "the file was not fsynced before the rename"
    assert synced.index(file_syncs[-1]) < len(synced) - 1
    assert synced[-1] == folder, "the folder was not fsynced after the rename"


def test_symlink_escaping_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not yours")
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "secret.txt")
    dest = LocalAdapter(root)
    for path in ("escape/secret.txt", "file-link"):
        with pytest.raises(ConfigurationError, match="outside"):
            dest.stat(path)
        with pytest.raises(ConfigurationError, match="outside"):
            dest.open_reader(path)
        with pytest.raises(ConfigurationError, match="outside"):
            dest.delete(path)
    with pytest.raises(ConfigurationError, match="outside"):
        dest.open_writer("escape/new.bin")
    assert [i.path for i in dest.list()] == []
    assert [i.path for i in dest.list("escape/")] == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_symlinked_root_and_inner_links_are_allowed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    dest = LocalAdapter(tmp_path / "link")
    dest.write_bytes("job/a.bin", b"a")
    assert (real / "job" / "a.bin").read_bytes() == b"a"
    assert dest.describe() == str(tmp_path / "link")
    (real / "alias").symlink_to(real / "job")
    assert dest.read_bytes("alias/a.bin") == b"a"


def test_no_overwrite_race_has_exactly_one_winner(tmp_path: Path) -> None:
    dest = LocalAdapter(tmp_path / "root")
    first = dest.open_writer("race.bin")
    second = dest.open_writer("race.bin")
    first.write(b"first")
    second.write(b"second")
    first.commit()
    with pytest.raises(ConfigurationError, match="already exists"):
        second.commit()
    assert dest.read_bytes("race.bin") == b"first"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["race.bin"]


def test_no_overwrite_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dest = LocalAdapter(tmp_path / "root")
    dest.write_bytes("x.bin", b"one")
    with pytest.raises(ConfigurationError, match="already exists"):
        dest.write_bytes("x.bin", b"two")
    assert dest.read_bytes("x.bin") == b"one"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["x.bin"]


def test_disk_full_is_storage_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = LocalAdapter(tmp_path / "root")
    writer = dest.open_writer("full.bin")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    writer.write(b"x" * 100)
    with pytest.raises(StorageFullError, match=r"full\.bin"):
        writer.commit()
    monkeypatch.undo()
    assert list(dest.list()) == []
    assert list((tmp_path / "root").iterdir()) == []


def _can_mount_tmpfs(where: Path) -> bool:
    where.mkdir()
    return os.system(f"mount -t tmpfs -o size=1m tmpfs {where} 2>/dev/null") == 0


def test_real_full_file_system_is_storage_full(tmp_path: Path) -> None:
    from conftest import require_infrastructure

    mountpoint = tmp_path / "tiny"
    require_infrastructure(_can_mount_tmpfs(mountpoint), "root privileges to mount a 1 MiB tmpfs")
    try:
        dest = LocalAdapter(mountpoint / "root")
        with pytest.raises(StorageFullError, match="no space left"), dest.open_writer("big.bin") as writer:
            for _ in range(4):
                writer.write(b"\xff" * (1 << 20))
            writer.commit()
        assert list(dest.list()) == []
        assert [p.name for p in (mountpoint / "root").iterdir()] == []
        dest.write_bytes("small.bin", b"fits")  # the space was given back
    finally:
        os.system(f"umount {mountpoint}")


def test_permission_denied_is_permanent_and_names_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = LocalAdapter(tmp_path / "root")
    real_open = os.open

    def denied(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".partial"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermanentError, match="permission denied") as caught:
        dest.open_writer("job/x.bin")
    assert "job/x.bin" in str(caught.value)
    assert not caught.value.retryable


def test_root_is_created_on_first_write_and_missing_root_lists_nothing(tmp_path: Path) -> None:
    dest = LocalAdapter(tmp_path / "a" / "b" / "root")
    assert list(dest.list()) == []
    with pytest.raises(NotFoundError):
        dest.stat("x")
    dest.write_bytes("x", b"1")
    assert (tmp_path / "a" / "b" / "root" / "x").read_bytes() == b"1"


def test_delete_prunes_empty_folders_but_not_root(tmp_path: Path) -> None:
    dest = LocalAdapter(tmp_path / "root")
    dest.write_bytes("j/k/l.bin", b"1")
    dest.write_bytes("j/m.bin", b"2")
    dest.delete("j/k/l.bin")
    assert sorted(p.name for p in (tmp_path / "root" / "j").iterdir()) == ["m.bin"]
    dest.delete("j/m.bin")
    assert (tmp_path / "root").is_dir()
    assert list((tmp_path / "root").iterdir()) == []


def test_file_folder_collision_is_a_configuration_error(tmp_path: Path) -> None:
    dest = LocalAdapter(tmp_path / "root")
    dest.write_bytes("a", b"file")
    with pytest.raises(ConfigurationError):
        dest.write_bytes("a/b", b"under a file")
    dest.write_bytes("d/e", b"x")
    with pytest.raises(ConfigurationError):
        dest.delete("d")
    with pytest.raises(NotFoundError):
        dest.open_reader("d")


def test_local_block_builds_adapter(tmp_path: Path) -> None:
    from prefect_db_backup.blocks import LocalDestination

    block = LocalDestination(path=str(tmp_path / "backups"))
    adapter = block.get_adapter()
    assert isinstance(adapter, LocalAdapter)
    assert block.describe() == str(tmp_path / "backups") == adapter.describe()
    adapter.test_connection()


def test_object_path_with_trailing_slash_is_refused(tmp_path: Path) -> None:
    dest = LocalAdapter(tmp_path / "root")
    with pytest.raises(ConfigurationError, match="ends with '/'"):
        dest.open_writer("folder/")
    dest.write_bytes("folder/x", b"1")
    assert [i.path for i in dest.list("folder/")] == ["folder/x"]
