"""Helpers shared by the file-tree destinations (SFTP, SMB, FTP, WebDAV).

These protocols store files in folders and commit by renaming a temporary file, so they share three
things: how a temporary name looks (and how a listing recognises and hides it), how a path prefix maps to
a folder walk, and how a path is split into its folder and file name.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prefect_db_backup.adapters.destination import ObjectInfo

_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}\.partial$")


def temp_name(path: str) -> str:
    """Return the temporary path a writer uploads ``path`` to before renaming it.

    The temporary file sits in the same folder (so the rename never crosses a file system) and is named
    ``.<name>.<uuid>.partial``: it never starts with the final name, and :func:`is_temp_name` recognises it.
    """
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f".{name}.{uuid.uuid4().hex}.partial")


def is_temp_name(name: str) -> bool:
    """Tell whether a file name (one segment) is a writer's temporary file."""
    return bool(_TEMP_RE.match(name))


def parent_dirs(path: str) -> list[str]:
    """Return the folders above a relative ``path``, outermost first (``a/b/c`` -> ``["a", "a/b"]``)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class Entry:
    """One item of a folder listing, as a protocol reports it.

    Attributes:
        name: File or folder name (one segment).
        is_dir: True for a folder.
        size: Size in bytes (files).
        modified: Last-modified time in UTC, if known.
    """

    name: str
    is_dir: bool
    size: int = 0
    modified: datetime | None = None


def walk_prefix(prefix: str, list_dir: Callable[[str], Iterable[Entry] | None]) -> Iterator[ObjectInfo]:
    """Yield every committed file whose relative path starts with ``prefix``.

    The walk starts in the folder that holds the prefix's last segment and descends only into folders that
    can contain matches. Temporary files of writers are skipped.

    Args:
        prefix: A validated relative prefix ("" for everything). ``"a/b"`` matches ``a/b``, ``a/bc`` and
            everything below ``a/b/`` or ``a/bc/``.
        list_dir: Lists one folder, given as a relative path ("" is the root); returns ``None`` when the
            folder does not exist.
    """
    start, _, head = prefix.rpartition("/")
    stack = [start]
    while stack:
        folder = stack.pop()
        entries = list_dir(folder)
        if entries is None:
            continue
        for entry in entries:
            if entry.name in (".", ".."):
                continue
            rel = f"{folder}/{entry.name}" if folder else entry.name
            if folder == start and not entry.name.startswith(head):
                continue
            if entry.is_dir:
                stack.append(rel)
            elif not is_temp_name(entry.name):
                yield ObjectInfo(path=rel, size=entry.size, modified=entry.modified)


__all__ = ["Entry", "is_temp_name", "parent_dirs", "temp_name", "walk_prefix"]
