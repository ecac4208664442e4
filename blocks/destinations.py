"""Destination blocks: where backups are stored (local folder, S3 and S3-compatible services).

Blocks hold configuration and secrets; the behaviour lives in the adapters they build with
:meth:`get_adapter`, through :mod:`prefect_db_backup.adapters.registry`.
"""

from __future__ import annotations

from typing import Any, Literal

from botocore.config import Config
from prefect.blocks.core import Block
from prefect_aws import AwsCredentials, MinIOCredentials
from prefect_db_backup.adapters.destination import Destination, validate_path
from prefect_db_backup.adapters.registry import destination_class
from prefect_db_backup.adapters.retry import with_retries
from prefect_db_backup.errors import ConfigurationError
from pydantic import Field, HttpUrl, field_validator

_DOCS = HttpUrl("https://github.com/prefect-db-backup/prefect-db-backup#destinations")


class LocalDestination(Block):
    """A folder on the machine that runs the backup (a local disk or a mounted network share).

    Files appear only when complete (temporary name, fsync, rename, fsync of the folder); nothing is
    ever written outside the folder.

    Attributes:
        path: Folder that holds the backups.

    Example:
        Load a saved local destination and describe it:
        ```python
        from prefect_db_backup.blocks import LocalDestination

        destination = LocalDestination.load("BLOCK_NAME")
        print(destination.describe())
        ```
    """

    _block_type_name = "DB Backup Local Destination"
    _block_type_slug = "db-backup-local-destination"
    _documentation_url = _DOCS
    _description = "A folder on the machine that runs the backup, for database backups."

    path: str = Field(
        ...,
        description="Folder that holds the backups; it is created if missing.",
        examples=["/srv/backups"],
    )

    def get_adapter(self) -> Destination:
        """Build the destination adapter for this folder."""
        return destination_class("local")(root=self.path)

    def describe(self) -> str:
        """Return the folder (contains no secret)."""
        return self.path


class S3Destination(Block):
    """An S3 bucket, or a bucket on an S3-compatible server (MinIO, Cloudflare R2, Hetzner, SeaweedFS).

    Uploads are streamed as multipart uploads of equal-size parts with bounded memory; a failed upload is
    aborted so no orphan parts remain; listings follow pagination past 1,000 keys. Locked backups are
    protected with an S3 object lock legal hold when the bucket has object lock enabled. Credentials come
    from a prefect-aws ``AwsCredentials`` block (keys, profile, role or the default chain) or a
    ``MinIOCredentials`` block; an S3-compatible server's endpoint is given here or in the credentials'
    ``aws_client_parameters``.

    Attributes:
        bucket: Bucket name.
        prefix: Key prefix that every backup is stored under.
        credentials: prefect-aws credentials.
        endpoint_url: Endpoint of an S3-compatible server.
        storage_class: Storage class of new objects.
        request_checksum_calculation: When to send request checksums.
        part_size_mib: Multipart part size in MiB.
        upload_concurrency: Parts uploaded at once.
        addressing_style: Bucket addressing style.

    Example:
        Load a saved S3 destination and check it can write, read and delete:
        ```python
        from prefect_db_backup.blocks import S3Destination

        destination = S3Destination.load("BLOCK_NAME")
        destination.get_adapter().test_connection()
        ```
    """

    _block_type_name = "DB Backup S3 Destination"
    _block_type_slug = "db-backup-s3-destination"
    _documentation_url = _DOCS
    _description = "An S3 or S3-compatible bucket for database backups, with streamed multipart uploads."

    bucket: str = Field(..., description="Name of the bucket that holds the backups.")
    prefix: str = Field(
        default="",
        description="Key prefix (folder) inside the bucket that every backup is stored under.",
        examples=["backups/prod"],
    )
    credentials: AwsCredentials | MinIOCredentials = Field(
        default_factory=AwsCredentials,
        description="prefect-aws AwsCredentials or MinIOCredentials used to reach the bucket.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible server; when empty, the credentials' "
        "aws_client_parameters endpoint (or AWS itself) is used.",
        examples=["https://s3.eu-central-1.example.com"],
    )
    storage_class: str | None = Field(
        default=None,
        description="Storage class of new objects, such as STANDARD_IA; empty for the bucket's default.",
    )
    request_checksum_calculation: Literal["when_supported", "when_required"] = Field(
        default="when_supported",
        description="Send the newer CRC request checksums on every upload (when_supported), or only "
        "where required, for servers that reject them (when_required).",
    )
    part_size_mib: int = Field(
        default=8,
        ge=5,
        le=5120,
        description="Multipart part size in MiB; memory per upload is (upload_concurrency + 1) parts. An "
        "object has at most 10,000 parts, so the part size is raised automatically when the database's "
        "expected size needs it.",
    )
    upload_concurrency: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Parts uploaded at once while the next one fills; memory per upload is at most "
        "(upload_concurrency + 1) parts.",
    )
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        default=None,
        description="Bucket addressing style; empty means path style with a custom endpoint, auto otherwise.",
    )

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value:
            try:
                validate_path(value, field="prefix")
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @field_validator("bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not value or "/" in value or any(ch.isspace() for ch in value):
            raise ValueError(f"bucket {value!r} is not a bucket name")
        return value

    def _client_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(self.credentials.aws_client_parameters.get_params_override())
        if self.endpoint_url:
            params["endpoint_url"] = self.endpoint_url
        return params

    def get_adapter(self) -> Destination:
        """Build the S3 adapter, wrapped so transient failures are retried (see ``adapters.retry``)."""
        credentials = self.credentials
        params = self._client_parameters()

        def client_factory(config: Config) -> Any:
            their_config = params.get("config")
            merged = their_config.merge(config) if their_config is not None else config
            session = credentials.get_boto3_session()
            kwargs = {k: v for k, v in params.items() if k != "config"}
            if session.region_name is None and merged.region_name is None:
                kwargs["region_name"] = "us-east-1"
            return session.client("s3", config=merged, **kwargs)

        secrets: list[str] = []
        if isinstance(credentials, MinIOCredentials):
            secrets.append(credentials.minio_root_password.get_secret_value())
        elif credentials.aws_secret_access_key is not None:
            secrets.append(credentials.aws_secret_access_key.get_secret_value())
        if isinstance(credentials, AwsCredentials) and credentials.aws_session_token:
            secrets.append(credentials.aws_session_token)
        adapter = destination_class("s3")(
            self.bucket,
            self.prefix,
            endpoint_url=params.get("endpoint_url"),
            storage_class=self.storage_class,
            part_size=self.part_size_mib * 1024 * 1024,
            upload_concurrency=self.upload_concurrency,
            request_checksum_calculation=self.request_checksum_calculation,
            addressing_style=self.addressing_style,
            client_factory=client_factory,
            redact=tuple(secrets),
        )
        return with_retries(adapter)

    def describe(self) -> str:
        """Return ``s3://bucket/prefix`` (and the endpoint when not AWS); contains no secret."""
        location = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        endpoint = self._client_parameters().get("endpoint_url")
        return f"{location} at {endpoint}" if endpoint else location


__all__ = ["LocalDestination", "S3Destination"]
