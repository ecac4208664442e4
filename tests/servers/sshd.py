"""A private OpenSSH sshd on 127.0.0.1 for SFTP tests.

Runs Debian's ``/usr/sbin/sshd -D -e -f CONFIG`` as root on a free port with its own host key, password and
public-key login, and ``internal-sftp``. Each server gets a Linux user of its own (``pdbt`` + random hex,
created with ``useradd``, random password set with ``chpasswd``, no login shell, removed with ``userdel`` at
stop): test sessions running side by side never reset each other's password. Everything else lives in a
private directory.

CI needs: Debian ``openssh-server``, root (to create the user and run sshd).
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

import paramiko

SSHD = "/usr/sbin/sshd"
USER_PREFIX = "pdbt"


def available() -> bool:
    """Tell whether this machine can run the test sshd (binary present, running as root)."""
    return os.path.exists(SSHD) and os.geteuid() == 0 and shutil.which("useradd") is not None


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Wait until something accepts connections on ``port``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {timeout}s")


@dataclass
class SSHServer:
    """A running test sshd.

    Attributes:
        port: Port on 127.0.0.1.
        username: Linux user that can log in.
        password: Its password.
        private_key: OpenSSH private key text authorized for that user (unencrypted).
        encrypted_private_key: The same kind of key, encrypted with ``key_passphrase``.
        key_passphrase: Passphrase of ``encrypted_private_key``.
        host_key_line: The server's host public key as ``"ssh-ed25519 AAAA..."``.
        known_hosts: Path of a known_hosts file that lists the server's host key for ``[127.0.0.1]:port``.
        data_dir: A directory owned by ``username`` where tests create their roots.
    """

    port: int
    username: str
    password: str
    private_key: str
    encrypted_private_key: str
    key_passphrase: str
    host_key_line: str
    known_hosts: Path
    data_dir: Path

    def fresh_root(self) -> str:
        """Create and return a new empty directory (absolute path) owned by the test user."""
        path = self.data_dir / f"root-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        user = pwd.getpwnam(self.username)
        os.chown(path, user.pw_uid, user.pw_gid)
        return str(path)


def _create_user(password: str) -> pwd.struct_passwd:
    name = f"{USER_PREFIX}{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, capture_output=True)
    return pwd.getpwnam(name)


def _key_text(key: paramiko.PKey, password: str | None = None) -> str:
    import io

    buf = io.StringIO()
    key.write_private_key(buf, password=password)
    return buf.getvalue()


@contextlib.contextmanager
def run_sshd() -> Iterator[SSHServer]:
    """Start a private sshd with a user of its own; stop it, remove the user and the files on exit."""
    base = Path(tempfile.mkdtemp(prefix="pdb-sshd-"))
    os.chmod(base, 0o755)
    password = uuid.uuid4().hex
    user = _create_user(password)
    try:
        with _run(base, user, password) as server:
            yield server
    finally:
        # --force: per-connection sshd children may still be exiting.
        subprocess.run(["userdel", "--force", user.pw_name], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _run(base: Path, user: pwd.struct_passwd, password: str) -> Iterator[SSHServer]:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    host_key_path = base / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key_path)],
        check=True,
        capture_output=True,
    )
    host_key_line = " ".join((base / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    client_key = paramiko.RSAKey.generate(2048)
    enc_key = paramiko.RSAKey.generate(2048)
    passphrase = uuid.uuid4().hex
    auth_dir = base / "authorized"
    auth_dir.mkdir(mode=0o755)
    authorized = auth_dir / user.pw_name
    authorized.write_text("".join(f"{k.get_name()} {k.get_base64()} test\n" for k in (client_key, enc_key)))
    os.chmod(authorized, 0o644)

    data_dir = base / "data"
    data_dir.mkdir(mode=0o755)
    os.chown(data_dir, user.pw_uid, user.pw_gid)

    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key_path}",
                f"PidFile {base / 'sshd.pid'}",
                f"AuthorizedKeysFile {auth_dir}/%u",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication yes",
                "PubkeyAuthentication yes",
                "KbdInteractiveAuthentication no",
                f"AllowUsers {user.pw_name}",
                "Subsystem sftp internal-sftp",
                "MaxStartups 100",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key_line}\n")

    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(base / "sshd.log", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc)
        yield SSHServer(
            port=port,
            username=user.pw_name,
            password=password,
            private_key=_key_text(client_key),
            encrypted_private_key=_key_text(enc_key, passphrase),
            key_passphrase=passphrase,
            host_key_line=host_key_line,
            known_hosts=known_hosts,
            data_dir=data_dir,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the listener and its per-connection children
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
