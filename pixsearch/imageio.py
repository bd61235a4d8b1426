"""Opening image files and bytes safely: size limits, EXIF rotation, first frame, EXIF facts.

Every image pixsearch looks at, indexed or asked about, is decoded here, so that both are bounded the
same way (bytes, pixels, aspect ratio) and a photo used as a query decodes to exactly the pixels it
was indexed with.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from pixsearch.errors import BadImageError
from pixsearch.models.preprocess import ImageTransform, aspect_ratio_problem
from pixsearch.xmpdoc import packet_date

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any camera, below a decompression bomb
DEFAULT_MAX_BYTES = 512 * 2**20  # 512 MiB: far above any camera file, far below what hurts to read
# Raster formats with a signature, read by Pillow itself (JPEG includes MPO): never a plugin that runs a program
# (EPS runs Ghostscript) or one that takes almost any bytes for an image (TGA).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "ICO", "PPM")
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


@dataclass(frozen=True)
class TakenDates:
    """The dates a photo file states, each None when absent or malformed."""

    original: datetime | None = None  # EXIF DateTimeOriginal: when the picture was taken
    digitized: datetime | None = None  # EXIF DateTimeDigitized (exiftool: CreateDate): when it was stored
    embedded_xmp: datetime | None = None  # photoshop:DateCreated, exif:DateTimeOriginal or xmp:CreateDate
    modified: datetime | None = None  # EXIF DateTime: when the file was last changed

    def best(self, sidecar: datetime | None = None) -> datetime | None:
        """When the picture was taken, as photo managers read it: the EXIF capture dates, then the
        XMP date of a sidecar (a person's or a program's statement about it), then the embedded
        XMP date, and last the file's modification date."""
        return self.original or self.digitized or sidecar or self.embedded_xmp or self.modified


@dataclass(frozen=True)
class Decoded:
    """One decoded image, upright, in RGB or (grayscale, a third of the memory) L mode.

    width and height are the full-resolution size after EXIF rotation, whatever scale draft mode
    decoded `image` at."""

    image: Image.Image
    width: int
    height: int
    dates: TakenDates
    camera: str | None

    @property
    def taken_at(self) -> datetime | None:
        """The date taken from the file alone (no sidecar)."""
        return self.dates.best()


def draft_size(transform: ImageTransform) -> int:
    """The size a JPEG may be draft-decoded down to for `transform` (at least this on each side).

    The indexer and query images both decode with it, so a photo finds itself with a score of 1."""
    return transform.size


def decode(source: bytes | BinaryIO, max_pixels: int, draft: int | None) -> Decoded:
    """Decode bytes or an open binary file, EXIF-rotated, first frame only, to RGB or L (grayscale).

    The pixel count and aspect ratio are checked from the header, before any pixel is decoded; no
    full-size copy is made that is not needed (apply_transform makes L into RGB once it is small).

    Raises:
        ValueError: with the reason as its message (not an image, truncated, too many pixels, too thin).
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    Image.init()  # registers every plugin (once): WEBP, TIFF and ICO are not registered up front
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=FORMATS)
        except UnidentifiedImageError:
            raise ValueError("not an image (format not recognised)") from None
        except Image.DecompressionBombError as error:
            raise ValueError(f"decompression bomb refused ({error})") from None
        except Exception as error:  # noqa: BLE001 - PIL plugins raise many types on bad headers
            raise ValueError(_describe(error)) from None
        width, height = image.size
        if width * height > max_pixels:
            raise ValueError(f"{width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
        problem = aspect_ratio_problem(width, height)
        if problem:
            raise ValueError(problem)
        if draft and image.format == "JPEG":
            # decode at 1/2, 1/4 or 1/8 scale while staying at least `draft` on each side
            image.draft("RGB", (draft, draft))
        try:
            image.seek(0)
            image.load()
            exif = _exif(image)
            upright = _upright(image, exif.get(ExifTags.Base.Orientation, 1))
        except Exception as error:  # noqa: BLE001 - PIL decoders raise many types on bad data
            raise ValueError(_describe(error)) from None
    dates, camera = exif_facts(exif)
    xmp = embedded_xmp(image)
    if xmp:
        dates = replace(dates, embedded_xmp=packet_date(xmp, "embedded XMP"))
    if exif.get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(upright, width, height, dates, camera)


def _exif(image: Image.Image) -> Image.Exif:
    try:
        return image.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF spoils only the EXIF, never the picture
        return Image.Exif()


def _upright(image: Image.Image, orientation: object) -> Image.Image:
    """The loaded image turned upright, in RGB or L, making no full-size copy that is not needed."""
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        # convert() would clip 0..65535 to 0..255 (a white picture); keep the high byte instead
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), "L")
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image(
    data: bytes | BinaryIO, path: str, max_pixels: int, draft_size: int | None
) -> tuple[Image.Image, int, int]:
    """Decode to an RGB image, EXIF-rotated, first frame only; returns (image, width, height).

    width and height are the full-resolution size after rotation, whatever draft mode decoded.

    Raises:
        ValueError: with the reason as its message (not an image, truncated, too many pixels).
    """
    decoded = decode(data, max_pixels, draft_size)
    return _rgb(decoded.image), decoded.width, decoded.height


def _describe(error: Exception) -> str:
    message = str(error)
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return "truncated image data"
    return (
        f"corrupt image data ({type(error).__name__}: {message})"
        if message
        else f"corrupt image data ({type(error).__name__})"
    )


def exif_facts(exif: Image.Exif) -> tuple[TakenDates, str | None]:
    """(dates, camera) from an image's EXIF, when present and well-formed."""
    try:
        sub = exif.get_ifd(ExifTags.IFD.Exif) if exif else {}
        dates = TakenDates(
            original=_exif_date(sub.get(ExifTags.Base.DateTimeOriginal)),
            digitized=_exif_date(sub.get(ExifTags.Base.DateTimeDigitized)),
            modified=_exif_date(exif.get(ExifTags.Base.DateTime)),
        )
        make = str(exif.get(ExifTags.Base.Make, "") or "").strip("\x00 ")
        model = str(exif.get(ExifTags.Base.Model, "") or "").strip("\x00 ")
    except Exception:  # noqa: BLE001 - EXIF is optional; any trouble means "none"
        return TakenDates(), None
    camera = model if model.startswith(make) else f"{make} {model}".strip()
    return dates, camera or None


def _exif_date(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # blank ("    :  :     :  :  "), partial or impossible dates


def embedded_xmp(image: Image.Image) -> bytes | None:
    """The XMP packet stored in the image file (JPEG APP1, PNG iTXt, WebP chunk, TIFF tag 700), if any."""
    packet = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if packet is None and hasattr(image, "tag_v2"):
        packet = image.tag_v2.get(700)  # type: ignore[attr-defined]
    if isinstance(packet, str):
        return packet.encode("utf-8")
    return bytes(packet) if isinstance(packet, (bytes, bytearray, tuple)) and packet else None


def size_problem(size: int, max_bytes: int) -> str | None:
    """Why a file of `size` bytes is not read at all, or None."""
    if size == 0:
        return "empty file (0 bytes)"
    if size > max_bytes:
        return f"file is {_mib(size)} ({size} bytes), over the limit of {_mib(max_bytes)}"
    return None


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def load_image(
    source: str | Path | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    draft: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """An RGB image from a path or bytes (a query image, an upload).

    `draft` lets a JPEG decode at reduced scale while staying at least that many pixels a side.
    A path must name a regular file (a FIFO would block) of at most `max_bytes`.

    Raises:
        BadImageError: naming the file (or `name`) and the reason.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    try:
        if isinstance(source, bytes):
            problem = size_problem(len(source), max_bytes)
            if problem:
                raise ValueError(problem)
            return _rgb(decode(source, max_pixels, draft).image)
        with _open_file(Path(source), max_bytes) as handle:
            return _rgb(decode(handle, max_pixels, draft).image)
    except ValueError as error:
        raise BadImageError(label, str(error)) from None
    except FileNotFoundError:
        raise BadImageError(label, "no such file") from None
    except OSError as error:
        raise BadImageError(label, f"unreadable: {error.strerror or error}") from None


def load_query_image(
    source: str | Path | bytes, transform: ImageTransform, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> Image.Image:
    """A query image decoded exactly as the indexer decodes a library file for `transform`.

    Raises:
        BadImageError: naming the file (or `name`) and the reason.
    """
    return load_image(source, max_pixels, name, draft=draft_size(transform))


def _open_file(path: Path, max_bytes: int) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file" if not stat.S_ISDIR(info.st_mode) else "is a folder")
        problem = size_problem(info.st_size, max_bytes)
        if problem:
            raise ValueError(problem)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")
