"""Names that end up in file paths: validation and the backup file naming scheme."""

from __future__ import annotations

import re

from prefect_db_backup.errors import ConfigurationError

_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")


def validate_name(value: str, *, field: str) -> str:
    r"""Check that a job or database name can safely be one segment of a path.

    Args:
        value: The name.
        field: The field it came from, named in the error (``job.name``, ``source.databases[2]``).

    Returns:
        The name, unchanged.

    Raises:
        ConfigurationError: If the name is empty, ``.`` or ``..``, starts with a dot, is longer than 200
            characters, or contains ``/``, ``\\``, NUL or another control character.
    """
    if not value or value in (".", ".."):
        raise ConfigurationError(f"{field} must not be empty, '.' or '..' (got {value!r})")
    if value.startswith("."):
        raise ConfigurationError(f"{field} must not start with '.' (got {value!r})")
    if _FORBIDDEN.search(value):
        raise ConfigurationError(
            f"{field} must not contain '/', '\\', NUL or control characters (got {value!r})"
        )
    if len(value) > 200:
        raise ConfigurationError(f"{field} must be at most 200 characters (got {len(value)})")
    return value
