"""JPEG renditions of library images, made once and cached under `<library>/thumbs/<size>/`.

A rendition is named by the image's content hash, so renaming a file reuses it and changing a
file's pixels makes a new one. Files are written to a temp name and renamed, so a reader never
sees half a JPEG even when two requests make the same rendition at once.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from pixsearch.errors import NotFoundError
from pixsearch.imageio import open_image

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

    def get(self, source: str | Path, content_hash: str, size: int) -> Path:
        """The cached rendition of `source` fitting in size x size, made now if missing.

        Raises:
            NotFoundError: the source file is gone or can no longer be decoded (the reason is named).
        """
        target = self.path_for(content_hash, size)
        if target.exists():
            return target
        try:
            data = Path(source).read_bytes()
        except OSError as error:
            raise NotFoundError(f"the file {source} can no longer be read ({error.strerror or error})") from None
        try:
            image, _, _ = open_image(data, str(source), self.max_pixels, draft_size=size)
        except ValueError as error:
            raise NotFoundError(f"the file {source} can no longer be decoded ({error})") from None
        image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                # 4:4:4 chroma: no colour bleeding around edges when a small rendition is shown large
                image.save(handle, "JPEG", quality=self.quality, optimize=True, subsampling=0)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.debug("made %dpx rendition of %s", size, source)
        return target
