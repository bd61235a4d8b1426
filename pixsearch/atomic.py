"""Writing a file atomically: a temp file in the same folder, fsync, then rename over the target.

The temp file is created with mode 0666 less the process umask, like any file the user makes
(photos are typically 0644), not mkstemp's private 0600.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """A fresh temp name beside `path`, ending in TMP_SUFFIX (so leftovers of a killed run can be found)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def write_atomic(path: Path, write: Callable[[BinaryIO], None], keep_mode: bool = False) -> None:
    """Create or replace `path` with what `write` writes to the open file; readers see old or new, never half.

    With `keep_mode`, a file replaced keeps its permission bits (a sidecar the user made private stays so).

    Raises:
        OSError: the folder cannot be written; nothing was changed.
    """
    mode = path.stat().st_mode & 0o7777 if keep_mode and path.exists() else None
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes, keep_mode: bool = False) -> None:
    write_atomic(path, lambda handle: handle.write(data), keep_mode)
