"""Reading, hashing and decoding image files. Runs in worker processes.

Files are opened only through `safefile.open_regular` (no link, regular files only, below the
folders being indexed), refused by size before a byte is read, hashed in chunks and decoded from
the open file: memory never holds a whole file. Every failure becomes a `Failure(path, reason)`
with a reason a person can act on; nothing here raises for a bad file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from pixsearch.errors import FileAccessError
from pixsearch.imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode, draft_size, size_problem
from pixsearch.models.preprocess import ImageTransform, apply_transform
from pixsearch.safefile import open_regular
from pixsearch.xmpdoc import MAX_SIDECAR_BYTES, packet_date, sidecar_candidates

_CHUNK = 2**20


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass(frozen=True)
class Hashed:
    path: str
    content_hash: str
    size: int
    mtime: float


@dataclass(frozen=True)
class PhotoFacts:
    """What the library keeps of a decoded file, besides its vector."""

    path: str
    content_hash: str
    size: int
    mtime: float
    width: int
    height: int
    taken_at: datetime | None
    camera: str | None


@dataclass(frozen=True)
class Prepared(PhotoFacts):
    """A decoded file, ready for the model."""

    pixels: npt.NDArray[np.float32]

    def facts(self) -> PhotoFacts:
        """The same file without its pixels."""
        return PhotoFacts(
            self.path, self.content_hash, self.size, self.mtime, self.width, self.height, self.taken_at, self.camera
        )


@dataclass(frozen=True)
class ReadOptions:
    """Which files may be read, and how large.

    roots: the folders being indexed; a file is opened only below one of them, through no link.
        Empty: each file's own folder (only the file itself is checked for being a link).
    max_bytes: larger files are refused before they are read.
    """

    roots: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class DecodeOptions:
    transform: ImageTransform
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True
    read: ReadOptions = field(default_factory=ReadOptions)


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _open(path: str, read: ReadOptions) -> tuple[BinaryIO, os.stat_result]:
    """The file, open, with its stat; raises _Refused with the reason it may not be read."""
    absolute = os.path.abspath(path)
    try:
        handle = open_regular(absolute, read.roots or (os.path.dirname(absolute),))
    except FileAccessError as error:
        raise _Refused("vanished before it could be read" if error.reason == "no such file" else error.reason) from None
    info = os.fstat(handle.fileno())
    problem = size_problem(info.st_size, read.max_bytes)
    if problem:
        handle.close()
        raise _Refused(problem)
    return handle, info


def _hash(handle: BinaryIO, max_bytes: int) -> tuple[str, int]:
    """sha256 and length of the rest of `handle`, read in chunks; refused if it grew past max_bytes."""
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise _Refused(f"grew past the limit of {max_bytes} bytes while being read")
        digest.update(chunk)
    if size == 0:
        raise _Refused("empty file (0 bytes)")
    return digest.hexdigest(), size


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str, read: ReadOptions | None = None) -> Hashed | Failure:
    """Content hash (sha256) of a file, with the size and mtime it had when read."""
    read = read or ReadOptions()
    try:
        handle, info = _open(path, read)
        with handle:
            content_hash, size = _hash(handle, read.max_bytes)
    except _Refused as refused:
        return Failure(path, refused.reason)
    except OSError as error:
        return Failure(path, f"unreadable: {error.strerror or error}")
    return Hashed(path, content_hash, size, info.st_mtime)


def _sidecar_date(path: str, read: ReadOptions) -> datetime | None:
    """The date in the photo's XMP sidecar, read like the photo (no link, a regular file); None if none."""
    for candidate in map(str, sidecar_candidates(Path(path))):
        try:
            handle = open_regular(candidate, read.roots or (os.path.dirname(candidate),))
        except FileAccessError:
            continue
        with handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
        return packet_date(data, candidate) if len(data) <= MAX_SIDECAR_BYTES else None
    return None


def prepare(path: str, options: DecodeOptions) -> Prepared | Failure:
    """Read, hash, decode and transform one file for the model."""
    draft = draft_size(options.transform) if options.draft else None
    try:
        handle, info = _open(path, options.read)
        with handle:
            content_hash, size = _hash(handle, options.read.max_bytes)
            handle.seek(0)
            decoded = decode(handle, options.max_pixels, draft)
        dates = decoded.dates
        taken_at = dates.best(None if dates.original or dates.digitized else _sidecar_date(path, options.read))
        pixels = apply_transform(options.transform, decoded.image)
    except _Refused as refused:
        return Failure(path, refused.reason)
    except ValueError as error:
        return Failure(path, str(error))
    except MemoryError:
        return Failure(path, "too large to decode in memory")
    except OSError as error:
        return Failure(path, f"unreadable: {error.strerror or error}")
    except Exception as error:  # noqa: BLE001 - one bad file must never end the run
        return Failure(path, f"could not be decoded ({type(error).__name__}: {error})")
    return Prepared(
        path, content_hash, size, info.st_mtime, decoded.width, decoded.height, taken_at, decoded.camera, pixels
    )
