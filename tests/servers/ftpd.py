"""A pyftpdlib FTP or explicit-TLS FTPS server on 127.0.0.1, in its own process, for FTP tests.

pyftpdlib runs one server per process (two in threads of one process crashed), so :func:`run_ftpd` starts
this file as a child process. The password reaches the child through its environment. TLS uses a
self-signed certificate for 127.0.0.1 generated with ``cryptography`` (pyftpdlib needs PyPI ``pyopenssl``
for FTPS).

CI needs: PyPI ``pyftpdlib`` and ``pyopenssl`` (test extras).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
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
from dataclasses import dataclass
from pathlib import Path

USER = "backup"


def available(tls: bool = False) -> bool:
    """Tell whether pyftpdlib (and pyOpenSSL for TLS) can be imported."""
    try:
        import pyftpdlib  # noqa: F401

        if tls:
            import OpenSSL  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class FTPServer:
    """A running test FTP server.

    Attributes:
        port: Port on 127.0.0.1.
        username: Login name.
        password: Its password.
        tls: Whether the server requires explicit TLS (AUTH TLS, PROT P) for control and data.
        cafile: The server certificate (self-signed), to verify TLS against.
        data_dir: Local folder the server serves as the user's home ("/").
    """

    port: int
    username: str
    password: str
    tls: bool
    cafile: Path | None
    data_dir: Path

    def fresh_root(self) -> str:
        """Create a new empty folder and return its absolute FTP path."""
        name = f"root-{uuid.uuid4().hex[:12]}"
        (self.data_dir / name).mkdir()
        return f"/{name}"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


@contextlib.contextmanager
def run_ftpd(*, tls: bool = False) -> Iterator[FTPServer]:
    """Start a pyftpdlib server in a child process; stop it and remove its files on exit."""
    base = Path(tempfile.mkdtemp(prefix="pdb-ftpd-"))
    data_dir = base / "data"
    data_dir.mkdir()
    password = uuid.uuid4().hex
    cert = key = None
    if tls:
        cert, key = _self_signed(base)
    port_file = base / "port"
    args = [sys.executable, __file__, "--dir", str(data_dir), "--port-file", str(port_file)]
    if cert and key:
        args += ["--cert", str(cert), "--key", str(key)]
    env = {**os.environ, "FTPD_PASSWORD": password}
    log = open(base / "ftpd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None:
                raise RuntimeError(f"ftpd exited early: {(base / 'ftpd.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("ftpd did not start within 20s")
            time.sleep(0.05)
        port = int(port_file.read_text())
        yield FTPServer(port=port, username=USER, password=password, tls=tls, cafile=cert, data_dir=data_dir)
    finally:
        proc.send_signal(signal.SIGINT)  # pyftpdlib's serve_forever(handle_exit=True) closes on it
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _serve() -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer as PyFTPServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    opts = parser.parse_args()

    authorizer = DummyAuthorizer()
    authorizer.add_user(USER, os.environ["FTPD_PASSWORD"], opts.dir, perm="elradfmwMT")
    handler: type[FTPHandler]
    if opts.cert:
        from pyftpdlib.handlers import TLS_FTPHandler

        TLS_FTPHandler.certfile = opts.cert
        TLS_FTPHandler.keyfile = opts.key
        TLS_FTPHandler.tls_control_required = True
        TLS_FTPHandler.tls_data_required = True
        handler = TLS_FTPHandler
    else:
        handler = FTPHandler
    handler.authorizer = authorizer
    handler.passive_ports = None
    handler.banner = "test ftpd ready"
    server = PyFTPServer(("127.0.0.1", 0), handler)
    server.max_cons = 256
    server.max_cons_per_ip = 0
    port = server.socket.getsockname()[1]
    tmp = Path(opts.port_file + ".tmp")
    tmp.write_text(str(port))
    tmp.rename(opts.port_file)
    server.serve_forever(handle_exit=True)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING)
    _serve()
