"""Reading a library's own photos: the one way every part of pixsearch that opens a stored photo
(the web routes, the tagging pass, the reranker) does it, re-checked at the moment of reading.

A stored path is opened only when it is a regular file below one of the folders the library has
indexed, reached through no symbolic link (see `pixsearch.safefile`), and no larger than the
indexer's file limit.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from PIL import Image

from pixsearch.errors import BadImageError, FileAccessError
from pixsearch.imageio import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, open_image, size_problem
from pixsearch.safefile import open_regular
from pixsearch.storage import Library


def open_photo(library: Library, path: str) -> BinaryIO:
    """Open a stored photo for reading.

    Raises:
        FileAccessError: naming the reason (a link, not a regular file, outside the folders, gone, or a
            library made by an older pixsearch that records no folders).
    """
    with library.session() as session:
        roots = library.photo_roots(session)
    if not roots:
        raise FileAccessError(
            path,
            "this library records no photo folders (it was made by an older pixsearch), so no file is "
            "served; run `pixsearch index` on its folders again",
        )
    return open_regular(path, roots)


def decode_photo(handle: BinaryIO, path: str, max_pixels: int, draft: int | None = None) -> Image.Image:
    """Decode an opened photo to RGB, EXIF-rotated, within the indexer's file and pixel limits.

    Raises:
        ValueError: with the reason as its message.
    """
    problem = size_problem(os.fstat(handle.fileno()).st_size, DEFAULT_MAX_BYTES)
    if problem:
        raise ValueError(problem)
    image, _, _ = open_image(handle, path, max_pixels, draft)
    return image


def load_photo(
    library: Library, path: str, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None
) -> Image.Image:
    """A stored photo decoded to RGB, EXIF-rotated (`draft`: a JPEG may decode at reduced scale).

    Raises:
        BadImageError: naming the path and the reason it cannot be opened or decoded.
    """
    try:
        with open_photo(library, path) as handle:
            return decode_photo(handle, path, max_pixels, draft)
    except FileAccessError as error:
        raise BadImageError(path, error.reason) from None
    except ValueError as error:
        raise BadImageError(path, str(error)) from None
    except OSError as error:
        raise BadImageError(path, f"unreadable: {error.strerror or error}") from None
