"""Everything one running app holds: settings, the open library, the search service, models, caches.

One `WebContext` per app (in `app.state.context`), built by `create_app` and reached by the routers
through `deps.py`. Nothing here is module-level, so two apps in one process never share state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, Generic, TypeVar

import numpy as np
from PIL import Image
from sqlalchemy import select

from pixsearch.errors import NotFoundError
from pixsearch.imageio import load_query_image
from pixsearch.models.spec import ModelOptions
from pixsearch.photos import decode_photo, open_photo
from pixsearch.search import ImageHit, SearchService
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.storage.annotations import SUGGESTED, Tag, tags_of
from pixsearch.storage.schema import ImageRow
from pixsearch.web.captions import Caption, CaptionStore, import_legacy_json
from pixsearch.web.models import ModelPool
from pixsearch.web.options import WebOptions
from pixsearch.web.thumbnails import ThumbnailCache

if TYPE_CHECKING:
    from pixsearch.web.querying import PendingRerank

RerankHook = Callable[[str, list[ImageHit]], list[ImageHit]]
TagsHook = Callable[[int], Sequence[tuple[str, float]]]
T = TypeVar("T")


class Recent(Generic[T]):
    """Recent things a page or client refers back to by a token: the vector of an uploaded photo (so its
    results can be paged with plain links, `/?qid=...`) or a result set to rerank later. Bounded; the
    oldest entries go first; lost on restart."""

    def __init__(self, expired: str, capacity: int = 64) -> None:
        self.expired = expired  # what a stale token's NotFoundError says
        self.capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, item: T) -> str:
        import secrets

        token = secrets.token_urlsafe(12)
        with self._lock:
            self._items[token] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> T:
        with self._lock:
            item = self._items.get(token)
            if item is None:
                raise NotFoundError(self.expired)
            self._items.move_to_end(token)
            return item


class WebContext:
    def __init__(
        self,
        settings: Settings,
        options: WebOptions,
        rerank_hook: RerankHook | None = None,
        tags_hook: TagsHook | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.rerank_hook = rerank_hook
        self.tags_hook = tags_hook
        self.library = Library.open(settings.library, settings.db_url)
        model_options = ModelOptions(device=settings.device, dtype=settings.dtype)
        self.search = SearchService(self.library, model_options)
        # SearchService builds its encoder and index caches lazily and without locks; one search at
        # a time keeps that safe (the FAISS search and SQL reads are milliseconds next to encoding)
        self.search_lock = threading.Lock()
        # a reranker keeps feature caches that are not thread-safe either
        self.rerank_lock = threading.Lock()
        self.models = ModelPool(
            options.captioner,
            options.answerer,
            model_options,
            workers=options.model_workers,
            max_pending=options.max_pending_model_jobs,
            entailer=options.entailer,
            patch_scorer=options.patch_scorer,
            writer=options.writer,
        )
        import_legacy_json(self.library)
        self.captions = CaptionStore(self.library)
        self.thumbnails = ThumbnailCache(self.library.root / "thumbs", settings.max_pixels)
        self.query_vectors: Recent[np.ndarray] = Recent("that photo search has expired; drop the photo again")
        # words-only results whose rerank the page (or a client) asks for after showing them
        self.result_sets: Recent[PendingRerank] = Recent(
            "that result set has expired (the server keeps the last 64); search again"
        )

    # -- images -----------------------------------------------------------------------------
    def image_row(self, image_id: int) -> ImageRow:
        with self.library.session() as session:
            row = session.get(ImageRow, image_id)
        if row is None:
            raise NotFoundError(f"no image with id {image_id} in the library")
        return row

    def image_rows(self, image_ids: Sequence[int]) -> dict[int, ImageRow]:
        if not image_ids:
            return {}
        with self.library.session() as session:
            rows = session.execute(select(ImageRow).where(ImageRow.id.in_(list(image_ids)))).scalars()
            return {row.id: row for row in rows}

    def open_file(self, row: ImageRow) -> BinaryIO:
        """The library file of `row`, opened for reading: a regular file below one of the library's
        photo folders (as recorded now, not at start-up), reached through no link.

        Raises:
            FileAccessError: naming the reason (a link, not a regular file, outside the folders, gone).
        """
        return open_photo(self.library, row.path)

    def read_image(self, row: ImageRow) -> Image.Image:
        """The library file of `row` (opened as `open_file` does), decoded with the library's pixel limit.

        Raises:
            FileAccessError: the file may not be opened. NotFoundError: it no longer decodes (a stored
            image is not the client's fault).
        """
        with self.open_file(row) as handle:
            try:
                return decode_photo(handle, row.path, self.settings.max_pixels)
            except ValueError as error:
                raise NotFoundError(f"the file of image {row.id} can no longer be read: {error}") from None

    def query_image(self, data: bytes, name: str) -> Image.Image:
        """An uploaded query photo, decoded exactly as the indexer decoded the library's photos (JPEG
        draft scale), so that a library photo uploaded again finds itself first.

        Raises:
            BadImageError: naming `name` and the reason.
        """
        with self.search_lock:  # the encoder is built lazily; its transform is all that is needed here
            transform = self.search.encoder.transform
        return load_query_image(data, transform, self.settings.max_pixels, name)

    def thumbnail(self, row: ImageRow, size: int) -> bytes:
        """A JPEG of `row` fitting in size x size; the file is opened (and so checked) every time."""
        with self.open_file(row) as handle:
            return self.thumbnails.get(handle, row.path, row.content_hash, size)

    def caption(self, row: ImageRow) -> Caption | None:
        """The stored caption of `row`: a person's, else the configured captioner's for its current bytes."""
        return self.captions.get(row, self.options.captioner)

    def tags(self, image_id: int) -> list[Tag]:
        """The photo's visible tags: from `tags_hook` when the app was given one, else from the library."""
        if self.tags_hook is not None:
            return [Tag(str(t), "hook", float(s), SUGGESTED) for t, s in self.tags_hook(image_id)]
        with self.library.session() as session:
            return tags_of(session, image_id)

    def close(self) -> None:
        self.models.close()
        self.library.close()
