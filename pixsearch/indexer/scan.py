"""Recursive scan of photo folders: every supported file with its size and mtime."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISBLK, S_ISCHR, S_ISFIFO, S_ISREG, S_ISSOCK

from pixsearch.errors import ConfigError

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


def display_path(path: str) -> str:
    """A printable form of a path whose name may not be valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_roots(roots: Iterable[Path]) -> list[Path]:
    """Resolve the folders to scan; a missing one is an error (never 'everything was deleted')."""
    resolved = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ConfigError(f"{path}: not a folder (is the drive mounted?)")
        resolved.append(path.resolve())
    return resolved


def scan(roots: Iterable[Path], exclude: Path | None = None) -> Iterator[Entry | Problem]:
    """Yield every regular file with a supported extension below `roots`, and a Problem for each
    one that cannot be indexed: a bad name, an unreadable folder, a symbolic link (to a file or a
    folder: links are never followed), a FIFO, device or socket named like a photo. `exclude`
    (the library's own folder) is skipped."""
    stack = [str(root) for root in roots]
    excluded = str(exclude) if exclude else None
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                children = sorted(entries, key=lambda e: e.name)
        except PermissionError:
            yield Problem(display_path(folder), "folder unreadable: permission denied")
            continue
        except FileNotFoundError:
            continue  # vanished while scanning: its files count as gone
        for entry in children:
            yield from _visit(entry, stack, excluded)


def _visit(entry: os.DirEntry[str], stack: list[str], excluded: str | None) -> Iterator[Entry | Problem]:
    if entry.name.startswith("."):
        return
    photo_name = os.path.splitext(entry.name)[1].lower() in EXTENSIONS
    try:
        if entry.is_symlink():
            if _links_to_folder(entry):
                yield Problem(display_path(entry.path), "symbolic link to a folder: not followed")
            elif photo_name:
                yield Problem(display_path(entry.path), "symbolic link: not followed")
            return
        if entry.is_dir(follow_symlinks=False):
            if entry.path != excluded:
                stack.append(entry.path)
            return
        if not photo_name:
            return
        stat = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as error:
        yield Problem(display_path(entry.path), f"unreadable: {error.strerror}")
        return
    if not S_ISREG(stat.st_mode):
        yield Problem(display_path(entry.path), f"not a regular file ({_kind(stat.st_mode)})")
        return
    try:
        entry.path.encode("utf-8")
    except UnicodeEncodeError:
        yield Problem(display_path(entry.path), "file name is not valid UTF-8")
        return
    yield Entry(entry.path, stat.st_size, stat.st_mtime)


def _links_to_folder(entry: os.DirEntry[str]) -> bool:
    """Whether a symbolic link leads to a folder: a stat through it, never a read."""
    try:
        return entry.is_dir()
    except OSError:  # a loop, or a target we may not see
        return False


def _kind(mode: int) -> str:
    if S_ISFIFO(mode):
        return "FIFO"
    if S_ISCHR(mode):
        return "character device"
    if S_ISBLK(mode):
        return "block device"
    if S_ISSOCK(mode):
        return "socket"
    return "unknown kind"
