"""Opening image files and bytes safely: size limits, EXIF rotation, first frame, EXIF facts."""

from __future__ import annotations

import io
import warnings
from datetime import datetime
from pathlib import Path

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from pixsearch.errors import BadImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above any camera, below a decompression bomb


def open_image(data: bytes, path: str, max_pixels: int, draft_size: int | None) -> tuple[Image.Image, int, int]:
    """Decode bytes to an RGB image, EXIF-rotated, first frame only; returns (image, width, height).

    width and height are the full-resolution size after rotation, whatever draft mode decoded.

    Raises:
        ValueError: with the reason as its message (not an image, truncated, too many pixels).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ValueError("not an image (format not recognised)") from None
        except Image.DecompressionBombError as error:
            raise ValueError(f"decompression bomb refused ({error})") from None
        except Exception as error:  # noqa: BLE001 - PIL plugins raise many types on bad headers
            raise ValueError(_describe(error)) from None
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
        except Exception as error:  # noqa: BLE001 - PIL decoders raise many types on bad data
            raise ValueError(_describe(error)) from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return image, width, height


def _describe(error: Exception) -> str:
    message = str(error)
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return "truncated image data"
    return (
        f"corrupt image data ({type(error).__name__}: {message})"
        if message
        else f"corrupt image data ({type(error).__name__})"
    )


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


def load_image(
    source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None, draft: int | None = None
) -> Image.Image:
    """An RGB image from a path or bytes (a query image, an upload).

    `draft` lets a JPEG decode at reduced scale while staying at least that many pixels a side.

    Raises:
        BadImageError: naming the file (or `name`) and the reason.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "uploaded image")
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise BadImageError(label, "no such file") from None
        except OSError as error:
            raise BadImageError(label, f"unreadable: {error.strerror or error}") from None
    if not data:
        raise BadImageError(label, "empty file (0 bytes)")
    try:
        image, _, _ = open_image(data, label, max_pixels, draft)
    except ValueError as error:
        raise BadImageError(label, str(error)) from None
    return image
