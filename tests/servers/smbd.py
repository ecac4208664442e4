"""A private Samba smbd on 127.0.0.1 for SMB tests.

Runs Debian's ``smbd --foreground -s CONF`` as root on a free port, with every state folder (private,
lock, state, cache, pid, ncalrpc) and the passdb in a fresh private folder, one share, and one Samba user
(a Linux user created idempotently with ``useradd``, added with ``smbpasswd -a`` reading the password from
stdin). ``--no-process-group`` is deliberately NOT passed: with it smbd kills its whole process group on
exit, pytest included.

CI needs: Debian ``samba``, root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SMBD = "/usr/sbin/smbd"
USER = "pdbsmb"
SHARE = "backups"


def available() -> bool:
    """Tell whether this machine can run the test smbd (binaries present, running as root)."""
    return (
        os.path.exists(SMBD)
        and shutil.which("smbpasswd") is not None
        and shutil.which("useradd") is not None
        and os.geteuid() == 0
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SMBServer:
    """A running test smbd.

    Attributes:
        port: Port on 127.0.0.1.
        share: Share name.
        username: Samba user.
        password: Its password.
        share_dir: Local folder behind the share.
    """

    port: int
    share: str
    username: str
    password: str
    share_dir: Path

    def fresh_root(self) -> str:
        """Create a new empty folder in the share and return its name."""
        name = f"root-{uuid.uuid4().hex[:12]}"
        path = self.share_dir / name
        path.mkdir()
        user = pwd.getpwnam(self.username)
        os.chown(path, user.pw_uid, user.pw_gid)
        return name


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(USER)


def _wait_ready(server: SMBServer, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Wait until a real SMB login and share listing work (an open TCP port is not enough on slow starts)."""
    import smbclient

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smbd exited with code {proc.returncode}: {_tail(log)}")
        cache: dict[str, object] = {}
        try:
            smbclient.listdir(
                rf"\\127.0.0.1\{server.share}",
                username=server.username,
                password=server.password,
                port=server.port,
                connection_timeout=5,
                connection_cache=cache,
            )
            return
        except Exception as exc:
            last = exc
        finally:
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)
        time.sleep(0.2)
    raise RuntimeError(f"smbd not ready on port {server.port} within {timeout}s ({last}): {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


@contextlib.contextmanager
def run_smbd() -> Iterator[SMBServer]:
    """Start a private smbd with a fresh state and stop it (and remove its files) on exit."""
    base = Path(tempfile.mkdtemp(prefix="pdb-smbd-"))
    os.chmod(base, 0o755)
    user = _ensure_user()
    password = uuid.uuid4().hex
    dirs = {name: base / name for name in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log")}
    for path in dirs.values():
        path.mkdir()
    share_dir = base / "share"
    share_dir.mkdir(mode=0o755)
    os.chown(share_dir, user.pw_uid, user.pw_gid)
    port = _free_port()
    conf = base / "smb.conf"
    conf.write_text(
        "\n".join(
            [
                "[global]",
                "  server role = standalone server",
                "  workgroup = WORKGROUP",
                f"  smb ports = {port}",
                "  interfaces = 127.0.0.1",
                "  bind interfaces only = yes",
                "  disable netbios = yes",
                f"  private dir = {dirs['private']}",
                f"  lock directory = {dirs['lock']}",
                f"  state directory = {dirs['state']}",
                f"  cache directory = {dirs['cache']}",
                f"  pid directory = {dirs['pid']}",
                f"  ncalrpc dir = {dirs['ncalrpc']}",
                f"  log file = {dirs['log']}/log.%m",
                "  logging = file",
                "  log level = 1",
                f"  passdb backend = tdbsam:{dirs['private']}/passdb.tdb",
                "  map to guest = never",
                "  server min protocol = SMB2_10",
                "  load printers = no",
                "  printing = bsd",
                "  printcap name = /dev/null",
                "  disable spoolss = yes",
                "  unix extensions = no",
                "",
                f"[{SHARE}]",
                f"  path = {share_dir}",
                "  read only = no",
                f"  valid users = {USER}",
                "  create mask = 0644",
                "  directory mask = 0755",
                "",
            ]
        )
    )
    subprocess.run(
        ["smbpasswd", "-c", str(conf), "-s", "-a", USER],
        input=f"{password}\n{password}\n".encode(),
        check=True,
        capture_output=True,
    )
    log = dirs["log"] / "smbd.stderr"
    with open(log, "wb") as log_handle:
        proc = subprocess.Popen(
            [SMBD, "--foreground", "--debug-stdout", "-s", str(conf)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            # No start_new_session: smbd calls setsid() itself (and fails if it already leads a session).
        )
    try:
        server = SMBServer(port=port, share=SHARE, username=USER, password=password, share_dir=share_dir)
        _wait_ready(server, proc, log)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # smbd leads its own process group after setsid()
        except ProcessLookupError:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)
