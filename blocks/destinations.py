"""Destination blocks: where backups are stored (local folder, S3 and S3-compatible services).

Blocks hold configuration and secrets; the behaviour lives in the adapters they build with
:meth:`get_adapter`, through :mod:`prefect_db_backup.adapters.registry`.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.registry import destination_class
from pydantic import Field


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


__all__ = ["LocalDestination"]
