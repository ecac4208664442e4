"""Destination blocks for file servers: SFTP, SMB shares, FTP/FTPS and WebDAV.

Blocks hold configuration and secrets; the behaviour lives in the adapters they build with
:meth:`get_adapter` through :mod:`prefect_db_backup.adapters.registry`, wrapped so that transient failures
are retried (:mod:`prefect_db_backup.adapters.retry`). Every adapter makes a file visible only when it is
complete (temporary name, then rename) and removes what a failed upload left.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect_db_backup.adapters.destination import Destination, validate_path
from prefect_db_backup.adapters.registry import destination_class
from prefect_db_backup.adapters.retry import with_retries
from prefect_db_backup.errors import ConfigurationError
from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

_DOCS = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#destinations")


def _check_folder(value: str, field: str) -> str:
    """Validate a '/'-separated folder inside a share or collection (leading/trailing slashes dropped)."""
    value = value.strip("/")
    if value:
        try:
            validate_path(value, field=field)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
    return value


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class SFTPDestination(Block):
    """A folder on an SFTP server (OpenSSH or any SSH server with the SFTP subsystem).

    Log in with a password or a private key. The server's host key is verified by default, against a
    known_hosts file or a pinned key; turning the check off is possible for tests only and logs a warning.
    Uploads are pipelined to a temporary file and renamed into place when complete.

    Attributes:
        host: Server name or address.
        port: SSH port.
        username: Login name.
        password: Password.
        private_key: Private key text.
        private_key_passphrase: Passphrase of the private key.
        root: Folder that holds the backups.
        known_hosts_path: known_hosts file to verify the host key against.
        host_key: Pinned host key line or SHA256 fingerprint.
        insecure_skip_host_key_check: Accept any host key.
        timeout_seconds: Network timeout.

    Example:
        Load a saved SFTP destination and check it can write, read and delete:
        ```python
        from prefect_db_backup.blocks import SFTPDestination

        destination = SFTPDestination.load("BLOCK_NAME")
        destination.get_adapter().test_connection()
        ```
    """

    _block_type_name = "DB Backup SFTP Destination"
    _description = "A folder on an SFTP server for database backups, with host key verification."
    _documentation_url = _DOCS

    host: str = Field(..., description="Name or address of the SFTP server.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port of the server.")
    username: str = Field(..., description="User name to log in with.")
    password: SecretStr | None = Field(default=None, description="Password, if logging in with a password.")
    private_key: SecretStr | None = Field(
        default=None,
        description="Private key text (OpenSSH or PEM; RSA, ECDSA or Ed25519), if logging in with a key.",
    )
    private_key_passphrase: SecretStr | None = Field(
        default=None, description="Passphrase of an encrypted private key."
    )
    root: str = Field(
        default="",
        description="Folder that holds the backups: absolute, or relative to the login folder; created if "
        "missing.",
        examples=["/srv/backups"],
    )
    known_hosts_path: str | None = Field(
        default=None,
        description="known_hosts file to verify the server's host key against; the user's "
        "~/.ssh/known_hosts when neither this nor host_key is set.",
    )
    host_key: str | None = Field(
        default=None,
        description="Pinned host key: a public key line such as the output of ssh-keyscan, or a SHA256: "
        "fingerprint as printed by ssh-keygen -lf.",
        examples=[
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA...",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        ],
    )
    insecure_skip_host_key_check: bool = Field(
        default=False,
        description="Accept any host key without verification (logs a warning); for tests only.",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Network timeout in seconds.")

    @model_validator(mode="after")
    def _needs_credentials(self) -> SFTPDestination:
        if self.password is None and self.private_key is None:
            raise ValueError("set password or private_key")
        return self

    def get_adapter(self) -> Destination:
        """Build the SFTP adapter, wrapped so transient failures are retried."""
        adapter = destination_class("sftp")(
            self.host,
            port=self.port,
            username=self.username,
            password=_secret(self.password),
            private_key=_secret(self.private_key),
            private_key_passphrase=_secret(self.private_key_passphrase),
            root=self.root,
            known_hosts=self.known_hosts_path,
            host_key=self.host_key,
            insecure_skip_host_key_check=self.insecure_skip_host_key_check,
            timeout=self.timeout_seconds,
        )
        return with_retries(adapter)

    def describe(self) -> str:
        """Return ``sftp://user@host:port/root`` (contains no secret)."""
        root = self.root if self.root.startswith("/") else f"/~/{self.root}" if self.root else "/~"
        return f"sftp://{self.username}@{self.host}:{self.port}{root}"


class SMBDestination(Block):
    """A folder on an SMB share (Windows file server, Samba, a NAS).

    Uploads go to a temporary file that the server renames into place when complete.

    Attributes:
        server: Server name or address.
        share: Share name.
        username: User name.
        password: Password.
        root: Folder inside the share.
        port: SMB port.
        encrypt: Require SMB3 encryption.
        timeout_seconds: Connection timeout.

    Example:
        Load a saved SMB destination and check it can write, read and delete:
        ```python
        from prefect_db_backup.blocks import SMBDestination

        destination = SMBDestination.load("BLOCK_NAME")
        destination.get_adapter().test_connection()
        ```
    """

    _block_type_name = "DB Backup SMB Destination"
    _description = "A folder on an SMB share (Windows, Samba, NAS) for database backups."
    _documentation_url = _DOCS

    server: str = Field(..., description="Name or address of the SMB server.")
    share: str = Field(..., description="Name of the share.", examples=["backups"])
    username: str | None = Field(
        default=None, description="User name (DOMAIN\\user or user@domain for a domain account)."
    )
    password: SecretStr | None = Field(default=None, description="Password of the user.")
    root: str = Field(
        default="", description="Folder inside the share that holds the backups; created if missing."
    )
    port: int = Field(default=445, ge=1, le=65535, description="SMB port of the server.")
    encrypt: bool = Field(default=False, description="Require SMB3 encryption of the session.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Connection timeout in seconds.")

    @field_validator("root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        return _check_folder(value, "root")

    @field_validator("share")
    @classmethod
    def _check_share(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value:
            raise ValueError(f"share {value!r} must be a bare share name")
        return value

    def get_adapter(self) -> Destination:
        """Build the SMB adapter, wrapped so transient failures are retried."""
        adapter = destination_class("smb")(
            self.server,
            self.share,
            username=self.username,
            password=_secret(self.password),
            root=self.root,
            port=self.port,
            encrypt=self.encrypt,
            timeout=self.timeout_seconds,
        )
        return with_retries(adapter)

    def describe(self) -> str:
        """Return ``smb://user@server:port/share/root`` (contains no secret)."""
        user = f"{self.username}@" if self.username else ""
        root = f"/{self.root}" if self.root else ""
        return f"smb://{user}{self.server}:{self.port}/{self.share}{root}"


class FTPDestination(Block):
    """A folder on an FTP server, in plain FTP or explicit TLS (FTPS, ``AUTH TLS``).

    Uploads go to a temporary file that is renamed into place when complete. With TLS the server
    certificate is verified (system CAs or a given CA file). Plain FTP sends the password in clear text:
    use it only on trusted networks.

    Attributes:
        host: Server name or address.
        port: Control port.
        username: Login name.
        password: Password.
        root: Folder that holds the backups.
        tls: Use explicit TLS.
        ca_file: CA bundle to verify the server certificate.
        verify_tls: Verify the server certificate.
        passive: Use passive mode.
        timeout_seconds: Network timeout.

    Example:
        Load a saved FTP destination and check it can write, read and delete:
        ```python
        from prefect_db_backup.blocks import FTPDestination

        destination = FTPDestination.load("BLOCK_NAME")
        destination.get_adapter().test_connection()
        ```
    """

    _block_type_name = "DB Backup FTP Destination"
    _description = "A folder on an FTP or FTPS (explicit TLS) server for database backups."
    _documentation_url = _DOCS

    host: str = Field(..., description="Name or address of the FTP server.")
    port: int = Field(default=21, ge=1, le=65535, description="Control port of the server.")
    username: str = Field(default="anonymous", description="User name to log in with.")
    password: SecretStr = Field(default=SecretStr(""), description="Password of the user.")
    root: str = Field(
        default="",
        description="Folder that holds the backups: absolute, or relative to the login folder; created if "
        "missing.",
    )
    tls: bool = Field(default=True, description="Use explicit TLS (AUTH TLS, PROT P) for control and data.")
    ca_file: str | None = Field(
        default=None,
        description="CA bundle (PEM) to verify the server certificate with, instead of the system CAs.",
    )
    verify_tls: bool = Field(
        default=True, description="Verify the server certificate and host name; turn off for tests only."
    )
    passive: bool = Field(
        default=True, description="Use passive mode, which works through NAT and firewalls."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Network timeout in seconds.")

    def get_adapter(self) -> Destination:
        """Build the FTP adapter, wrapped so transient failures are retried."""
        adapter = destination_class("ftp")(
            self.host,
            port=self.port,
            username=self.username,
            password=self.password.get_secret_value(),
            root=self.root,
            tls=self.tls,
            ca_file=self.ca_file,
            verify_tls=self.verify_tls,
            passive=self.passive,
            timeout=self.timeout_seconds,
        )
        return with_retries(adapter)

    def describe(self) -> str:
        """Return ``ftp(s)://user@host:port/root`` (contains no secret)."""
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.root.strip('/')}"


class WebDAVDestination(Block):
    """A collection on a WebDAV server (Nextcloud, ownCloud, Apache mod_dav, nginx, a NAS).

    Uploads are streamed to a temporary file and moved into place when complete; the move never replaces
    an existing backup.

    Attributes:
        url: Base URL of the WebDAV share.
        username: User name.
        password: Password.
        root: Collection below the URL.
        verify_tls: Verify the server certificate.
        timeout_seconds: Network timeout.

    Example:
        Load a saved WebDAV destination and check it can write, read and delete:
        ```python
        from prefect_db_backup.blocks import WebDAVDestination

        destination = WebDAVDestination.load("BLOCK_NAME")
        destination.get_adapter().test_connection()
        ```
    """

    _block_type_name = "DB Backup WebDAV Destination"
    _description = "A collection on a WebDAV server (Nextcloud, ownCloud, NAS) for database backups."
    _documentation_url = _DOCS

    url: str = Field(
        ...,
        description="Base URL of the WebDAV share, without credentials.",
        examples=["https://cloud.example.com/remote.php/dav/files/backup/"],
    )
    username: str | None = Field(default=None, description="User name for HTTP basic authentication.")
    password: SecretStr | None = Field(default=None, description="Password (or app token) of the user.")
    root: str = Field(
        default="", description="Collection below the URL that holds the backups; created if missing."
    )
    verify_tls: bool = Field(
        default=True, description="Verify the server certificate; turn off for tests only."
    )
    timeout_seconds: float = Field(default=60.0, gt=0, description="Network timeout in seconds.")

    @field_validator("root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        return _check_folder(value, "root")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url {value!r} must start with http:// or https://")
        if "@" in value.split("/")[2]:
            raise ValueError("url must not contain credentials; use username and password")
        return value

    def get_adapter(self) -> Destination:
        """Build the WebDAV adapter, wrapped so transient failures are retried."""
        adapter = destination_class("webdav")(
            self.url,
            username=self.username,
            password=_secret(self.password),
            root=self.root,
            verify_tls=self.verify_tls,
            timeout=self.timeout_seconds,
        )
        return with_retries(adapter)

    def describe(self) -> str:
        """Return the collection URL with the user name (contains no secret)."""
        base = self.url if self.url.endswith("/") else self.url + "/"
        scheme, rest = base.split("://", 1)
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{rest}{self.root}"


__all__ = ["FTPDestination", "SFTPDestination", "SMBDestination", "WebDAVDestination"]
