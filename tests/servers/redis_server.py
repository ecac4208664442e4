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

    ca_file: Path | None = None

    def client(self, db: int = 0):  # type: ignore[no-untyped-def]
        import redis

        if self.ca_file is not None:
            return redis.Redis(
                host="127.0.0.1",
                port=self.port,
                db=db,
                password=self.password,
                ssl=True,
                ssl_ca_certs=str(self.ca_file),
            )
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


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Write a throwaway CA and a server certificate for 127.0.0.1; return (cert, key, ca) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pdb test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "server.crt", directory / "server.key", directory / "ca.crt")
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths


@contextlib.contextmanager
def redis_server(password: str | None = None, *, tls: bool = False) -> Iterator[RedisServer]:
    """Start a throwaway redis-server; yield it; stop it and remove its directory.

    With ``tls``, the server listens only with TLS (certificate for 127.0.0.1 signed by a throwaway CA
    whose file is ``server.ca_file``; client certificates not required).
    """
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
    ca_file: Path | None = None
    if tls:
        cert, key, ca_file = make_tls_files(directory)
        port_index = argv.index("--port") + 1
        argv[port_index] = "0"
        argv += ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        argv += ["--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no", "--tls-replication", "yes"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, password, directory, proc)
    server.ca_file = ca_file
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
