"""One writer at a time per library, across processes.

Every command that changes a library's vectors or runs a long write (index, index-texts, tag,
a re-index) holds an exclusive `flock` on `<library>/writer.lock` for its whole run. The kernel
drops the lock when the holder exits or is killed, so a crashed run never leaves the library
locked. The holder writes its pid and what it does into the file, for the "busy" message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pixsearch.errors import LibraryBusyError

LOCK_NAME = "writer.lock"
SCHEMA_LOCK_NAME = "schema.lock"


class WriterLock:
    """Re-entrant within one process (a `tag` step inside an `index` run), exclusive across processes."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, what: str, wait_s: float = 0.0) -> None:
        """Take the lock for `what` (e.g. "pixsearch index"), waiting up to `wait_s` seconds.

        Raises:
            LibraryBusyError: another process holds it; the message names its pid and what it does.
        """
        with self._guard:
            if self._fd is not None:
                self._depth += 1
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            deadline = time.monotonic() + max(wait_s, 0.0)
            delay = 0.05
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        os.close(fd)
                        raise
                    if time.monotonic() >= deadline:
                        holder = _holder(fd)
                        os.close(fd)
                        raise LibraryBusyError(
                            f"library {self.path.parent} is busy: {holder} is writing to it; "
                            "wait for it to finish (or pass --wait SECONDS)"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
            self._fd, self._depth = fd, 1

    def release(self) -> None:
        with self._guard:
            if self._fd is None:
                return
            self._depth -= 1
            if self._depth == 0:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None


@contextmanager
def schema_lock(root: Path) -> Iterator[None]:
    """Held while a process creates or migrates the library's database: two processes opening a new
    library at once would otherwise both see no tables and both create them (the second fails with
    "table ... already exists"). Blocks until the other has finished; that takes a moment."""
    fd = os.open(Path(root) / SCHEMA_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _holder(fd: int) -> str:
    """'<what> (pid N)' from the lock file, as its holder wrote it."""
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, what = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"{what or 'another process'} (pid {pid})"
