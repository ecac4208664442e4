"""Find adapter classes by name, loading their modules only when asked.

Built-in adapters are listed here as ``"module:Class"`` strings with an install hint for optional
dependencies; third-party packages add their own through the entry-point groups
``prefect_db_backup.sources`` and ``prefect_db_backup.destinations`` (name = ``module:Class``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from prefect_db_backup.adapters.destination import Destination
from prefect_db_backup.adapters.source import Source
from prefect_db_backup.errors import ConfigurationError

_PKG = "prefect_db_backup.adapters"

#: Built-in sources: engine name -> "module:Class".
SOURCES: dict[str, str] = {
    "postgres": f"{_PKG}.sources.postgres:PostgresAdapter",
    "sqlite": f"{_PKG}.sources.sqlite:SQLiteAdapter",
    "mysql": f"{_PKG}.sources.mysql:MySQLAdapter",
    "redis": f"{_PKG}.sources.redis:RedisAdapter",
    "mongodb": f"{_PKG}.sources.mongodb:MongoDBAdapter",
}

#: Built-in destinations: kind -> "module:Class".
DESTINATIONS: dict[str, str] = {
    "local": f"{_PKG}.destinations.local:LocalAdapter",
    "s3": f"{_PKG}.destinations.s3:S3Adapter",
    "sftp": f"{_PKG}.destinations.sftp:SFTPAdapter",
    "smb": f"{_PKG}.destinations.smb:SMBAdapter",
    "ftp": f"{_PKG}.destinations.ftp:FTPAdapter",
    "webdav": f"{_PKG}.destinations.webdav:WebDAVAdapter",
}

_SOURCE_GROUP = "prefect_db_backup.sources"
_DESTINATION_GROUP = "prefect_db_backup.destinations"


def _load(kind: str, builtin: dict[str, str], group: str, what: str) -> type[Any]:
    target = builtin.get(kind)
    if target is None:
        for ep in entry_points(group=group):
            if ep.name == kind:
                return ep.load()
        known = sorted({*builtin, *(ep.name for ep in entry_points(group=group))})
        raise ConfigurationError(f"unknown {what} kind {kind!r}", hint=f"known kinds: {', '.join(known)}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"the {what} {kind!r} needs a library that is not installed: {exc.name}",
            hint="pip install 'prefect-db-backup' with its dependencies",
        ) from exc
    return getattr(module, attr)


def source_class(engine: str) -> Callable[..., Source]:
    """Return the :class:`Source` implementation registered as ``engine``.

    Its constructor's arguments are the implementation's own.

    Raises:
        ConfigurationError: If no source has that name, or its library is missing.
    """
    return _load(engine, SOURCES, _SOURCE_GROUP, "source")


def destination_class(kind: str) -> Callable[..., Destination]:
    """Return the :class:`Destination` implementation registered as ``kind``.

    Its constructor's arguments are the implementation's own.

    Raises:
        ConfigurationError: If no destination has that name, or its library is missing.
    """
    return _load(kind, DESTINATIONS, _DESTINATION_GROUP, "destination")
