"""Searching a library: text->image, image->image, image->text. Reads only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
from PIL import Image
from sqlalchemy import select

from pixsearch.errors import ConfigError, EmptyIndexError, LibraryError, NotFoundError
from pixsearch.models import registry
from pixsearch.models.roles import DualEncoder, Embedding, Role, TextEncoder, Tower
from pixsearch.models.spec import ModelOptions
from pixsearch.search.relevance import Background
from pixsearch.search.results import ImageHit, TextHit
from pixsearch.storage.library import IMAGES, TEXTS, Library
from pixsearch.storage.schema import ImageRow, ModelRow, TextRow
from pixsearch.storage.vector_index import VectorIndex

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_K = 1000


def check_k(k: int, offset: int = 0) -> None:
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be between 1 and {MAX_K}, got {k}")
    if not 0 <= offset <= 100_000:
        raise ConfigError(f"offset must be between 0 and 100000, got {offset}")


class SearchService:
    """Answers queries against a library with the model the library was indexed with."""

    def __init__(self, library: Library, options: ModelOptions | None = None, encoder: DualEncoder | None = None):
        self.library = library
        self.options = options or ModelOptions()
        self._encoder = encoder
        self._own_encoder = encoder is None  # an encoder handed in is the caller's to keep
        self._query_encoder: TextEncoder | None = None
        self._query_spec: str | None = None
        self._model: ModelRow | None = None
        self._indexes: dict[str, tuple[int, VectorIndex]] = {}
        self._fixed_texts: dict[tuple[str | None, tuple[str, ...]], Embedding] = {}
        self._calibrations: dict[str, Background | None] = {}
        self._pins = threading.local()

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Within the block (on this thread) the library's model, query model and index generations
        are read from the database once, not at every use: one query sees one state of the library
        and pays for one read of each. Outside a block each use reads afresh."""
        outer = getattr(self._pins, "memo", None)
        if outer is None:
            self._pins.memo = self._library_state()
        try:
            yield
        finally:
            if outer is None:
                self._pins.memo = None

    def _read(self, key: object, read: Callable[[], T]) -> T:
        memo = getattr(self._pins, "memo", None)
        if memo is None:
            return read()
        if key not in memo:
            memo[key] = read()
        return memo[key]

    def _library_state(self) -> dict[object, object]:
        """What a query reads of the library's state, read in one session (see `pinned`)."""
        with self.library.session() as session:
            model = self.library.active_model(session)
            if model is None:
                return {"model": None}
            return {
                "model": model,
                "query_model": self.library.query_model(session),
                ("generation", IMAGES, model.key): self.library.generation(session, IMAGES, model.key),
            }

    def _library_model(self) -> ModelRow | None:
        with self.library.session() as session:
            return self.library.active_model(session)

    def _query_spec_in_library(self) -> str | None:
        with self.library.session() as session:
            return self.library.query_model(session)

    # -- model and indexes ----------------------------------------------------------------
    @property
    def model(self) -> ModelRow:
        """The library's active model, read afresh: a re-index by another process may have switched it."""
        model = self._read("model", self._library_model)
        if model is None:
            raise EmptyIndexError(f"library {self.library.root} has no images indexed yet; run `pixsearch index`")
        if self._model is not None and self._model.key != model.key:
            log.info("library %s switched from %s to %s: reloading", self.library.root, self._model.spec, model.spec)
            self._indexes.clear()
            self._fixed_texts.clear()
            self._query_encoder = self._query_spec = None
            if self._encoder is not None and self._own_encoder:
                self._encoder.close()
                self._encoder = None
        self._model = model
        return model

    @property
    def encoder(self) -> DualEncoder:
        if self._encoder is None:
            self._encoder = registry.create(self.model.spec, Role.DUAL_ENCODER, self.options)
        return self._encoder

    def _check_preprocessing(self) -> None:
        if self.encoder.preprocess_id != self.model.preprocess_id:
            raise LibraryError(
                f"model {self.model.spec} now preprocesses images differently ({self.encoder.preprocess_id}) "
                f"than when the library was indexed ({self.model.preprocess_id}); re-index with --reindex"
            )

    def index(self, kind: str) -> VectorIndex:
        """The current index of `kind`, reloaded when the database moved on (an indexer ran)."""
        key = self.model.key

        def read() -> int:
            with self.library.session() as session:
                return self.library.generation(session, kind, key)

        generation = self._read(("generation", kind, key), read)
        cached = self._indexes.get(kind)
        if cached is None or cached[0] != generation:
            self._indexes[kind] = (generation, self.library.load_index(kind, self.model, persist=False))
        return self._indexes[kind][1]

    # -- queries --------------------------------------------------------------------------
    def _text_model(self) -> DualEncoder | TextEncoder:
        """The library's query model when it carries one (e.g. multilingual), else the dual encoder."""
        spec = self._read("query_model", self._query_spec_in_library)
        if spec is None:
            self.encoder.load_towers(Tower.TEXT)
            return self.encoder
        if self._query_encoder is None or self._query_spec != spec:
            encoder = registry.create(spec, Role.TEXT_ENCODER, self.options)
            if encoder.dim != self.model.dim:
                raise LibraryError(
                    f"query model {spec} gives {encoder.dim}-d vectors; the library's {self.model.spec} has {self.model.dim}"
                )
            self._query_encoder, self._query_spec = encoder, spec
        return self._query_encoder

    def encode_text(self, texts: Sequence[str]) -> Embedding:
        return self._text_model().encode_texts(list(texts))

    def text_vectors(self, texts: tuple[str, ...]) -> Embedding:
        """Vectors of a fixed set of texts (the relevance background), encoded once per text model."""
        key = (self._read("query_model", self._query_spec_in_library) or self.model.spec, texts)
        if key not in self._fixed_texts:
            self._fixed_texts[key] = self.encode_text(texts)
        return self._fixed_texts[key]

    def relevance_calibration(self) -> Background | None:
        """The relevance background and z_min the library's model ships with (`relevance.json`), if any."""
        spec = self.model.spec
        if spec not in self._calibrations:
            self._calibrations[spec] = Background.of_model(spec)
        return self._calibrations[spec]

    def encode_image(self, image: Image.Image) -> Embedding:
        self._check_preprocessing()
        self.encoder.load_towers(Tower.IMAGE)
        return self.encoder.encode_images([image])

    def text_to_image(self, query: str, k: int = 10, offset: int = 0) -> list[ImageHit]:
        if not query.strip():
            raise ConfigError("empty query: give some words to search for")
        return self.vector_to_image(self.encode_text([query])[0], k, offset)

    def image_to_image(self, image: Image.Image, k: int = 10, offset: int = 0) -> list[ImageHit]:
        return self.vector_to_image(self.encode_image(image)[0], k, offset)

    def similar_to(self, image_id: int, k: int = 10, offset: int = 0) -> list[ImageHit]:
        """ "More like this": neighbours of a stored image by its stored vector, itself excluded."""
        hits = self.vector_to_image(self.stored_vector(image_id), k + 1, offset)
        return [hit for hit in hits if hit.image_id != image_id][:k]

    def stored_vector(self, image_id: int) -> np.ndarray:
        """The vector the library holds for an image under its model.

        Raises:
            NotFoundError: the image is not in the library (or has no vector yet).
        """
        found, vectors = self.vectors_of([image_id])
        if not found:
            raise NotFoundError(f"image {image_id} is not in the library")
        return vectors[0]

    def vector_to_image(self, vector: np.ndarray, k: int = 10, offset: int = 0) -> list[ImageHit]:
        check_k(k, offset)
        index = self.index(IMAGES)
        if len(index) == 0:
            raise EmptyIndexError(f"library {self.library.root} has no images indexed yet; run `pixsearch index`")
        scores, ids = index.search(np.asarray(vector, dtype=np.float32)[None, :], k + offset)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0][offset:]
        return self._image_hits(pairs)

    def image_to_text(self, image: Image.Image, k: int = 10, collection: str | None = None) -> list[TextHit]:
        check_k(k)
        index = self.index(TEXTS)
        if len(index) == 0:
            raise EmptyIndexError(f"library {self.library.root} has no texts indexed; run `pixsearch index-texts`")
        vector = self.encode_image(image)
        # a collection filter is applied after the search, so fetch more than asked
        fetch = k if collection is None else min(len(index), k * 10)
        scores, ids = index.search(vector, fetch)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        hits = self._text_hits(pairs)
        if collection is not None:
            hits = [hit for hit in hits if hit.collection == collection]
        return hits[:k]

    def image_ids_of(self, vector_ids: Sequence[int], index: VectorIndex | None = None) -> dict[int, int]:
        """FAISS ids (embedding rows) -> image ids, from the image index (`index` when the caller holds
        it already; no database read)."""
        if not len(vector_ids):
            return {}
        owners = (index or self.index(IMAGES)).owners_of(np.asarray(vector_ids, dtype=np.int64))
        return {int(v): int(o) for v, o in zip(vector_ids, owners.tolist(), strict=True) if o >= 0}

    def vectors_of(self, image_ids: Sequence[int], index: VectorIndex | None = None) -> tuple[list[int], Embedding]:
        """The stored vectors of images, read from the image index's vector file (memory-mapped), not
        the database: (the image ids that have one, in the order given; their vectors [n, d]).
        `index`: the image index, when the caller holds it already (one query, one index)."""
        index = index or self.index(IMAGES)
        wanted = np.asarray(list(image_ids), dtype=np.int64)
        vector_ids = index.ids_of_owners(wanted)
        present = vector_ids >= 0
        found, vectors = index.vectors_of(vector_ids[present])
        return wanted[present][found].tolist(), vectors[found]

    def all_images(self) -> list[ImageHit]:
        """Every image of the library as a hit with score 0 (for batch jobs over the library)."""
        with self.library.session() as session:
            rows = session.execute(select(ImageRow).order_by(ImageRow.id)).scalars().all()
        return [ImageHit(r.id, r.path, 0.0, r.width, r.height, r.taken_at, r.camera, r.content_hash) for r in rows]

    # -- rows -----------------------------------------------------------------------------
    def _image_hits(self, pairs: list[tuple[int, float]]) -> list[ImageHit]:
        if not pairs:
            return []
        image_of = self.image_ids_of([vector_id for vector_id, _ in pairs])
        with self.library.session() as session:
            query = select(ImageRow).where(ImageRow.id.in_(list(image_of.values())))
            rows = {row.id: row for row in session.execute(query).scalars()}
        return [
            ImageHit(r.id, r.path, score, r.width, r.height, r.taken_at, r.camera, r.content_hash)
            for vector_id, score in pairs
            if (r := rows.get(image_of.get(vector_id, -1))) is not None
        ]

    def _text_hits(self, pairs: list[tuple[int, float]]) -> list[TextHit]:
        if not pairs:
            return []
        owners = self.index(TEXTS).owners_of(np.asarray([vector_id for vector_id, _ in pairs], dtype=np.int64))
        with self.library.session() as session:
            query = select(TextRow).where(TextRow.id.in_([int(o) for o in owners if o >= 0]))
            rows = {row.id: row for row in session.execute(query).scalars()}
        return [
            TextHit(r.id, r.text, r.collection, score)
            for (_, score), owner in zip(pairs, owners.tolist(), strict=True)
            if (r := rows.get(owner)) is not None
        ]
