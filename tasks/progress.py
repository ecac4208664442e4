"""Live progress of a dump: a Prefect progress artifact updated about once a second from a side thread.

The dump loop only bumps counters (:meth:`ProgressReporter.update`); the HTTP calls to the Prefect API
happen on the reporter's own thread, so a slow API never slows the dump.
"""

from __future__ import annotations

import logging
import re
import threading
from types import TracebackType
from typing import cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect_db_backup.units import format_bytes

logger = logging.getLogger(__name__)


def artifact_key(*parts: str) -> str:
    """An artifact key from free text: lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:100] or "backup"


class ProgressReporter:
    """Reports bytes dumped so far to a progress artifact, throttled to one update per ``interval``.

    Args:
        key: Artifact key.
        label: What is being dumped, for the description.
        estimate: Expected plain size in bytes, if known; the percentage then follows it (capped at 99 until
            the end), otherwise the percentage stays at 0 until the end and the description carries the bytes.
        interval: Seconds between updates.
    """

    def __init__(self, key: str, label: str, estimate: int | None = None, interval: float = 1.0) -> None:
        self._key = key
        self._label = label
        self._estimate = estimate
        self._interval = interval
        self._plain = 0
        self._stored = 0
        self._reported = -1
        self._stop = threading.Event()
        self._artifact: UUID | None = None
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        try:
            self._artifact = cast(
                UUID, create_progress_artifact(0.0, key=self._key, description=self._describe())
            )
        except Exception as exc:  # progress is informative only: never fail a backup for it
            logger.warning("could not create the progress artifact: %s", exc)
        self._thread.start()
        return self

    def update(self, plain: int, stored: int) -> None:
        """Record the bytes so far (called from the dump loop; cheap)."""
        self._plain = plain
        self._stored = stored

    def _percent(self) -> float:
        if not self._estimate:
            return 0.0
        return min(99.0, 100.0 * self._plain / self._estimate)

    def _describe(self, done: bool = False) -> str:
        text = f"{self._label}: {format_bytes(self._plain)} dumped, {format_bytes(self._stored)} stored"
        if self._estimate and not done:
            text += f" (database about {format_bytes(self._estimate)})"
        return text + (" - done" if done else "")

    def _push(self, percent: float, done: bool = False) -> None:
        if self._artifact is None:
            return
        try:
            update_progress_artifact(self._artifact, percent, description=self._describe(done))
        except Exception as exc:
            logger.debug("progress update failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._plain != self._reported:
                self._reported = self._plain
                self._push(self._percent())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if exc_type is None:
            self._push(100.0, done=True)
