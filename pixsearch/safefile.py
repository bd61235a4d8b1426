"""Opening a library file without ever following a link: the one way pixsearch reads photos.

A photo is opened only when every path component below one of the library's roots is a real
folder or file (opened relative to its parent with O_NOFOLLOW, so a link swapped in at any level,
at any moment, is refused rather than followed) and the file itself is a regular file (never a
FIFO, a device or a socket, which could block or never end).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Sequence
from typing import BinaryIO

from pixsearch.errors import FileAccessError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading must not wait for a writer; cleared once it is known regular
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


def root_of(path: str, roots: Sequence[str]) -> str | None:
    """The longest of `roots` that holds `path` (absolute, normalised), or None."""
    best = None
    for root in roots:
        root = root.rstrip("/") or "/"
        inside = path.startswith(root + "/") if root != "/" else path.startswith("/")
        if inside and (best is None or len(root) > len(best)):
            best = root
    return best


def open_regular(path: str, roots: Sequence[str]) -> BinaryIO:
    """Open `path` for reading, binary, only if it is a regular file reached through no link below a root.

    Args:
        path: absolute path as stored in the library.
        roots: the library's photo folders (resolved); the path must lie below one of them.

    Raises:
        FileAccessError: naming the path and why it may not be opened.
    """
    normal = os.path.normpath(path)
    if not os.path.isabs(path) or normal != path.rstrip("/"):
        raise FileAccessError(path, "not a plain absolute path")
    root = root_of(normal, roots)
    if root is None:
        raise FileAccessError(path, "outside the library's photo folders")
    parts = normal[len(root) :].strip("/").split("/")
    try:
        folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise FileAccessError(path, f"photo folder {root} unavailable: {error.strerror}") from None
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=folder)
            except OSError as error:
                raise FileAccessError(path, _reason(error, folder=True)) from None
            os.close(folder)
            folder = inner
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=folder)
        except OSError as error:
            raise FileAccessError(path, _reason(error, folder=False)) from None
    finally:
        os.close(folder)
    return _as_regular(fd, path)


def _as_regular(fd: int, path: str) -> BinaryIO:
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileAccessError(path, f"not a regular file ({_kind(mode)})")
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _reason(error: OSError, folder: bool) -> str:
    if error.errno == errno.ENOENT:
        return "no such file"
    if error.errno in (errno.ELOOP, errno.EMLINK) and not folder:
        return "a symbolic link (links are never followed)"
    if error.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
        return "a symbolic link or a file where a folder should be in its path (links are never followed)"
    if error.errno == errno.EACCES:
        return "unreadable: permission denied"
    return f"unreadable: {error.strerror or error}"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
