"""Child processes for dump and restore tools, handled with care.

- Each child starts in its own session, so cancelling a run can end its whole process group.
- Secrets go to children through their environment or :func:`private_file`, never their arguments.
- stderr is kept as a bounded tail (never the whole output), scrubbed of secrets before it reaches a message.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, BinaryIO

from prefect_db_backup.adapters.source import DumpStream
from prefect_db_backup.errors import ConfigurationError, DumpFailedError, RestoreFailedError
from prefect_db_backup.redaction import scrub

logger = logging.getLogger(__name__)

#: Bytes of a child's stderr kept for error messages.
STDERR_TAIL_BYTES = 8192
#: Seconds a child gets between SIGTERM and SIGKILL.
TERMINATE_GRACE_SECONDS = 5.0
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20


def require_tool(name: str, *, hint: str) -> str:
    """Find an executable on PATH.

    Raises:
        ConfigurationError: If it is not installed, with ``hint`` telling how to install it.
    """
    path = shutil.which(name)
    if path is None:
        raise ConfigurationError(f"the program {name!r} is not installed or not on PATH", hint=hint)
    return path


@contextlib.contextmanager
def private_file(content: str, *, suffix: str = "") -> Iterator[Path]:
    """Write ``content`` to a file only the current user can read; remove it on exit.

    Yields:
        The file's path, inside a fresh mode-0700 directory.
    """
    directory = tempfile.mkdtemp(prefix="pdb-")
    path = Path(directory) / f"secret{suffix}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _StderrTail:
    """Drains a child's stderr on a thread, keeping only the last bytes."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._tail = bytearray()
        self._thread = threading.Thread(target=self._drain, name="stderr-tail", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        for line in iter(lambda: self._stream.read1(65536), b""):  # type: ignore[attr-defined]
            self._tail += line
            if len(self._tail) > STDERR_TAIL_BYTES:
                del self._tail[: len(self._tail) - STDERR_TAIL_BYTES]

    def text(self, secrets: Sequence[str | None]) -> str:
        self._thread.join(timeout=5)
        return scrub(self._tail.decode("utf-8", "replace").strip(), secrets)


def _start(
    argv: Sequence[str], env: Mapping[str, str] | None, *, stdin: int | None, stdout: int | None
) -> subprocess.Popen[bytes]:
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    return subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=child_env,
        start_new_session=True,
        close_fds=True,
    )


def terminate_group(proc: subprocess.Popen[bytes], grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """End a child's whole process group: SIGTERM, then SIGKILL after ``grace`` seconds; wait for it."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of an exited leader
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class ProcessDumpStream(DumpStream):
    """A :class:`DumpStream` reading a child process's stdout.

    Args:
        argv: Program and arguments. Must not contain secrets.
        env: Extra environment for the child (where passwords go).
        description: What the child does, for messages (``pg_dump of 'app'``).
        secrets: Values scrubbed from any message built from the child's output.
        cleanup: Optional callable run once the child is gone (for example removing a private file).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        description: str,
        secrets: Sequence[str | None] = (),
        cleanup: contextlib.ExitStack | None = None,
    ) -> None:
        self._description = description
        self._secrets = list(secrets)
        self._cleanup = cleanup
        self._proc = _start(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._proc.stdout.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
        self._stdout = self._proc.stdout
        self._stderr = _StderrTail(self._proc.stderr)
        self._closed = False

    @property
    def pid(self) -> int:
        """Process id (and process group id) of the child."""
        return self._proc.pid

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes of the child's output."""
        return self._stdout.read(size)

    def close(self) -> None:
        """Wait for the child; raise :class:`DumpFailedError` if it failed."""
        if self._closed:
            return
        self._closed = True
        try:
            # Drain anything left so the child is never blocked on a full pipe while we wait.
            while self._stdout.read(1 << 20):
                pass
            code = self._proc.wait()
            if code != 0:
                raise DumpFailedError(
                    f"{self._description} failed with exit code {code}: "
                    f"{self._stderr.text(self._secrets) or 'no error output'}"
                )
        finally:
            self._release()

    def abort(self) -> None:
        """Kill the child's process group and wait for it."""
        if self._closed:
            return
        self._closed = True
        try:
            terminate_group(self._proc)
        finally:
            self._release()

    def _release(self) -> None:
        for stream in (self._proc.stdout, self._proc.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        if self._cleanup is not None:
            self._cleanup.close()


def run_restore(
    argv: Sequence[str],
    stream: BinaryIO,
    *,
    env: Mapping[str, str] | None = None,
    description: str,
    secrets: Sequence[str | None] = (),
    chunk_size: int = 1 << 20,
) -> None:
    """Run a restore tool, feeding it ``stream`` on stdin.

    Raises:
        RestoreFailedError: If the tool exits non-zero, with the scrubbed tail of its stderr.
    """
    proc = _start(argv, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stderr is not None
    stderr = _StderrTail(proc.stderr)
    try:
        try:
            while chunk := stream.read(chunk_size):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the tool stopped reading: its exit code and stderr say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        code = proc.wait()
    except BaseException:
        terminate_group(proc)
        raise
    if code != 0:
        raise RestoreFailedError(
            f"{description} failed with exit code {code}: {stderr.text(secrets) or 'no error output'}"
        )


def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run a short helper command (``pg_dump --version``) and capture its output as text."""
    child_env = dict(os.environ)
    if env:
        child_env.update(env)
    return subprocess.run(
        list(argv), env=child_env, capture_output=True, text=True, timeout=timeout, check=False
    )
