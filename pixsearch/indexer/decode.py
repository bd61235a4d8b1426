"""Reading, hashing and decoding image files. Runs in worker processes: imports no torch.

Every failure becomes a `Failure(path, reason)` with a reason a person can act on; nothing here
raises for a bad file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from pixsearch.imageio import DEFAULT_MAX_PIXELS, exif_facts, open_image
from pixsearch.models.preprocess import ImageTransform, apply_transform


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
class Prepared:
    """A decoded file, ready for the model."""

    path: str
    content_hash: str
    size: int
    mtime: float
    width: int
    height: int
    taken_at: datetime | None
    camera: str | None
    pixels: npt.NDArray[np.float32]


@dataclass(frozen=True)
class DecodeOptions:
    transform: ImageTransform
    max_pixels: int = DEFAULT_MAX_PIXELS
    draft: bool = True


def _read(path: str) -> tuple[bytes, float] | Failure:
    try:
        with open(path, "rb") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            data = handle.read()
    except FileNotFoundError:
        return Failure(path, "vanished before it could be read")
    except PermissionError:
        return Failure(path, "unreadable: permission denied")
    except IsADirectoryError:
        return Failure(path, "is a directory")
    except OSError as error:
        return Failure(path, f"unreadable: {error.strerror or error}")
    if not data:
        return Failure(path, "empty file (0 bytes)")
    return data, mtime


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str) -> Hashed | Failure:
    """Content hash (sha256) of a file, with the size and mtime it had when read."""
    read = _read(path)
    if isinstance(read, Failure):
        return read
    data, mtime = read
    return Hashed(path, hash_bytes(data), len(data), mtime)


def prepare(path: str, options: DecodeOptions) -> Prepared | Failure:
    """Read, hash, decode and transform one file for the model."""
    read = _read(path)
    if isinstance(read, Failure):
        return read
    data, mtime = read
    draft = options.transform.size if options.draft else None
    try:
        image, width, height = open_image(data, path, options.max_pixels, draft)
        pixels = apply_transform(options.transform, image)
    except ValueError as error:
        return Failure(path, str(error))
    except MemoryError:
        return Failure(path, "too large to decode in memory")
    except Exception as error:  # noqa: BLE001 - one bad file must never end the run
        return Failure(path, f"could not be decoded ({type(error).__name__}: {error})")
    taken, camera = exif_facts(data)
    return Prepared(path, hash_bytes(data), len(data), mtime, width, height, taken, camera, pixels)
