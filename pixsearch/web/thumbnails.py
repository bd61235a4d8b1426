"""JPEG renditions of library images, made once and cached under `<library>/thumbs/<size>/`.

A rendition is named by the image's content hash, so renaming a file reuses it and changing a
file's pixels makes a new one. Files are written to a temp name and renamed, so a reader never
sees half a JPEG even when two requests make the same rendition at once. Renditions are decoded
from a photo the caller has opened (safely), and read back through no link.
"""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from pixsearch.atomic import write_bytes_atomic
from pixsearch.errors import FileAccessError, NotFoundError
from pixsearch.imageio import DEFAULT_MAX_BYTES, open_image, size_problem
from pixsearch.safefile import open_regular

log = logging.getLogger(__name__)

_HEX = re.compile(r"^[0-9a-f]{16,128}$")


class ThumbnailCache:
    def __init__(self, root: Path, max_pixels: int, quality: int = 88) -> None:
        self.root = root
        self.max_pixels = max_pixels
        self.quality = quality

    def path_for(self, content_hash: str, size: int) -> Path:
        # the hash comes from the database, but a path is built from it: never trust it blindly
        if not _HEX.match(content_hash):
            raise NotFoundError(f"image has no usable content hash ({content_hash[:20]!r})")
        return self.root / str(size) / content_hash[:2] / f"{content_hash}.jpg"

    def get(self, source: BinaryIO, label: str, content_hash: str, size: int) -> bytes:
        """The JPEG rendition of the open photo `source` fitting in size x size, made now if not cached.

        Args:
            source: the photo, opened by the caller (through `WebContext.open_file`).
            label: its path, for messages.

        Raises:
            NotFoundError: the photo can no longer be decoded (the reason is named).
        """
        target = self.path_for(content_hash, size)
        cached = self._cached(target)
        if cached is not None:
            return cached
        problem = size_problem(os.fstat(source.fileno()).st_size, DEFAULT_MAX_BYTES)
        try:
            if problem:
                raise ValueError(problem)
            image, _, _ = open_image(source, label, self.max_pixels, draft_size=size)
        except ValueError as error:
            raise NotFoundError(f"the file {label} can no longer be decoded ({error})") from None
        image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        # 4:4:4 chroma: no colour bleeding around edges when a small rendition is shown large
        image.save(buffer, "JPEG", quality=self.quality, optimize=True, subsampling=0)
        data = buffer.getvalue()
        self._store(target, data)
        log.debug("made %dpx rendition of %s", size, label)
        return data

    def _cached(self, target: Path) -> bytes | None:
        """The stored rendition, or None when there is none (or not a regular file: it is made again)."""
        try:
            with open_regular(str(target), [str(self.root)]) as handle:
                return handle.read()
        except FileAccessError:
            return None

    @staticmethod
    def _store(target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)
