"""Reading, hashing and decoding image files. Runs in worker processes: imports no torch.

Every failure becomes a `Failure(path, reason)` with a reason a person can act on; nothing here
raises for a bad file.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from pixsearch.models.preprocess import ImageTransform, apply_transform

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any camera, below a decompression bomb


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


def open_image(data: bytes, path: str, max_pixels: int, draft_size: int | None) -> tuple[Image.Image, int, int]:
    """Decode bytes to an RGB image, EXIF-rotated, first frame only; returns (image, width, height).

    width and height are the full-resolution size after rotation, whatever draft mode decoded.

    Raises:
        BadImage reasons as ValueError(reason).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ValueError("not an image (format not recognised)") from None
        except Image.DecompressionBombError as error:
            raise ValueError(f"decompression bomb refused ({error})") from None
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"{width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
        if draft_size and image.format == "JPEG":
            # decode at 1/2, 1/4 or 1/8 scale while staying at least draft_size on each side
            image.draft("RGB", (draft_size, draft_size))
        try:
            image.seek(0)
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            image = ImageOps.exif_transpose(image)
            image = image.convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            message = str(error)
            if "truncated" in message or isinstance(error, EOFError):
                raise ValueError("truncated image data") from None
            raise ValueError(f"corrupt image data ({message or type(error).__name__})") from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return image, width, height


def exif_facts(data: bytes) -> tuple[datetime | None, str | None]:
    """(date taken, camera) from EXIF, when present and well-formed."""
    try:
        exif = Image.open(io.BytesIO(data)).getexif()
    except Exception:  # noqa: BLE001 - EXIF is optional; any trouble means "none"
        return None, None
    sub = exif.get_ifd(ExifTags.IFD.Exif) if exif else {}
    raw_date = sub.get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
    taken = None
    if isinstance(raw_date, str):
        try:
            taken = datetime.strptime(raw_date.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            taken = None
    make = str(exif.get(ExifTags.Base.Make, "") or "").strip("\x00 ")
    model = str(exif.get(ExifTags.Base.Model, "") or "").strip("\x00 ")
    camera = model if model.startswith(make) else f"{make} {model}".strip()
    return taken, camera or None


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
    taken, camera = exif_facts(data)
    return Prepared(path, hash_bytes(data), len(data), mtime, width, height, taken, camera, pixels)
