"""Rescoring a candidate list with a cross-attention reranker."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixsearch.errors import BadImageError, ConfigError
from pixsearch.imageio import DEFAULT_MAX_PIXELS, load_image
from pixsearch.models.roles import Reranker
from pixsearch.rerank.cache import DiskCache, MemoryCache, reranker_key, state_budget
from pixsearch.rerank.fusion import Fusion, fuse
from pixsearch.search.results import ImageHit, TextHit

log = logging.getLogger(__name__)

MAX_RERANK_K = 256


@dataclass(frozen=True)
class RerankOptions:
    k: int = 16  # on a CPU a BLIP-base ITM pass costs ~20 GFLOP per candidate once vision is cached
    fusion: Fusion = Fusion.ITM_PLUS_SIMILARITY
    similarity_weight: float = 1.0  # itm+sim: the first-stage similarity's weight (see `fusion.fuse`)
    memory_cache_bytes: int = 512 * 2**20
    # the image-state tier (cross-attention keys/values, ~21 MB per image at BLIP-base size) below the
    # features; None: a quarter of the memory free when the service starts, at most 2 GiB; 0: off
    state_cache_bytes: int | None = None
    # also keep new features on disk (float16) under the library; a disk cache already there (filled by
    # `pixsearch rerank-cache` or `index --rerank-cache`) is read either way
    disk_cache: bool = False
    disk_cache_bytes: int | None = None  # the disk cache's bound; None: none
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_RERANK_K:
            raise ConfigError(f"rerank k must be between 1 and {MAX_RERANK_K}, got {self.k}")
        if not 0 <= self.similarity_weight < float("inf"):
            raise ConfigError(f"similarity weight must be finite and >= 0, got {self.similarity_weight}")
        if self.state_cache_bytes is not None and self.state_cache_bytes < 0:
            raise ConfigError(f"state cache bytes must be >= 0, got {self.state_cache_bytes}")


PhotoReader = Callable[..., Image.Image]


class RerankService:
    """Reranks the top k of a hit list; hits below the top k keep their order beneath them.

    Per image it keeps what no query changes, in tiers: vision features (memory, optionally disk) and,
    for rerankers that offer `score_items`, image states (cross-attention keys/values, memory only).
    A candidate seen before then costs only the text side.
    """

    def __init__(
        self,
        reranker: Reranker,
        spec: str,
        library_root: Path,
        options: RerankOptions | None = None,
        read_photo: PhotoReader | None = None,
    ):
        """`read_photo(path, max_pixels, draft=...)` decodes a hit's file; a library's own photos should be
        read with `pixsearch.photos.load_photo` bound to it (no links, only below its folders)."""
        self.reranker = reranker
        self.spec = spec
        self.options = options or RerankOptions()
        self.read_photo = read_photo or load_image
        self.memory = MemoryCache(self.options.memory_cache_bytes)
        state_bytes = self.options.state_cache_bytes
        self.states = MemoryCache(state_budget() if state_bytes is None else state_bytes)
        folder = library_root / "rerank-cache" / reranker_key(spec)
        reads = self.options.disk_cache or folder.is_dir()
        self.disk = DiskCache(folder, self.options.disk_cache_bytes, spec) if reads else None

    @property
    def _draft_size(self) -> int:
        transform = getattr(self.reranker, "transform", None)
        return int(getattr(transform, "size", 512))

    def features(self, hits: Sequence[ImageHit]) -> list[Any | None]:
        """Per-hit features from the caches, computing the misses in one batch; None for a file
        that can no longer be read (it is then ranked last)."""
        keys = [(hit.image_id, hit.content_hash) for hit in hits]
        found: list[Any | None] = [self.memory.get(key) for key in keys]
        if self.disk is not None:
            for i, key in enumerate(keys):
                if found[i] is None and (feature := self.disk.get(key)) is not None:
                    found[i] = feature
                    self.memory.put(key, feature)
        missing = [i for i, feature in enumerate(found) if feature is None]
        images: list[Image.Image] = []
        loaded: list[int] = []
        for i in missing:
            try:
                images.append(self.read_photo(hits[i].path, self.options.max_pixels, draft=self._draft_size))
                loaded.append(i)
            except BadImageError as error:
                log.warning("cannot rerank %s: %s", hits[i].path, error.reason)
        for i, feature in zip(loaded, self.reranker.image_features(images) if images else [], strict=True):
            found[i] = feature
            self.memory.put(keys[i], feature)
            if self.disk is not None and self.options.disk_cache:
                self.disk.put(keys[i], feature)
        return found

    def rerank_images(self, query: str, hits: Sequence[ImageHit], k: int | None = None) -> list[ImageHit]:
        """Text query against image candidates."""
        top, rest = list(hits[: k or self.options.k]), list(hits[k or self.options.k :])
        if not top:
            return list(hits)
        items = self.items(top)
        usable = [i for i, item in enumerate(items) if item is not None]
        itm = np.full(len(top), -np.inf, dtype=np.float32)
        if usable:
            keys = [(top[i].image_id, top[i].content_hash) for i in usable]
            itm[usable] = self._score(query, [items[i] for i in usable], keys)
        similarity = np.asarray([hit.score for hit in top], dtype=np.float32)
        final = fuse(itm, similarity, self.options.fusion, self.options.similarity_weight)
        rescored = [
            dataclasses.replace(hit, score=float(f), first_stage_score=hit.score, rerank_score=float(s))
            for hit, f, s in zip(top, final, itm, strict=True)
        ]
        return _ordered(rescored) + rest

    def items(self, hits: Sequence[ImageHit]) -> list[Any | None]:
        """Per hit its image state where the state tier holds one, else its features (see `features`)."""
        found: list[Any | None] = [self.states.get((hit.image_id, hit.content_hash)) for hit in hits]
        missing = [i for i, item in enumerate(found) if item is None]
        for i, feature in zip(missing, self.features([hits[i] for i in missing]) if missing else [], strict=True):
            found[i] = feature
        return found

    def _score(self, query: str, items: list[Any], keys: list[tuple[int, str]]) -> np.ndarray:
        score_items = getattr(self.reranker, "score_items", None)  # rerankers with image states
        if score_items is None:
            return self.reranker.score_features(query, items)
        scores, states = score_items(query, items, keep=self.states.max_bytes > 0)
        for key, item, state in zip(keys, items, states, strict=True):
            if state is not None and state is not item:
                self.states.put(key, state)
        return scores

    def rerank_texts(self, image: Image.Image, hits: Sequence[TextHit], k: int | None = None) -> list[TextHit]:
        """Image query against text candidates: the image's features are computed once."""
        top, rest = list(hits[: k or self.options.k]), list(hits[k or self.options.k :])
        if not top:
            return list(hits)
        feature = self.reranker.image_features([image])[0]
        batched = getattr(self.reranker, "score_texts", None)  # one image against many texts, where offered
        if batched is not None:
            itm = np.asarray(batched(feature, [hit.text for hit in top]), dtype=np.float32)
        else:
            itm = np.asarray([self.reranker.score_features(hit.text, [feature])[0] for hit in top], dtype=np.float32)
        similarity = np.asarray([hit.score for hit in top], dtype=np.float32)
        final = fuse(itm, similarity, self.options.fusion, self.options.similarity_weight)
        rescored = [
            dataclasses.replace(hit, score=float(f), first_stage_score=hit.score, rerank_score=float(s))
            for hit, f, s in zip(top, final, itm, strict=True)
        ]
        return _ordered(rescored) + rest

    def precompute(self, hits: Sequence[ImageHit], progress: Callable[[int, int], None] | None = None) -> int:
        """Fill the disk cache for these images (e.g. the whole library), in their order, until it is
        full (`disk_cache_bytes`; then `self.disk.full`); returns how many were computed."""
        if self.disk is None or not self.options.disk_cache:
            raise ConfigError("precomputing rerank features needs the disk cache (RerankOptions(disk_cache=True))")
        todo = [hit for hit in hits if (hit.image_id, hit.content_hash) not in self.disk]
        computed = 0
        for start in range(0, len(todo), 16):
            if self.disk.full:
                log.info(
                    "rerank disk cache full at %d bytes: %d images left out", self.disk.used_bytes, len(todo) - start
                )
                break
            chunk = todo[start : start + 16]
            self.features(chunk)
            computed += sum((hit.image_id, hit.content_hash) in self.disk for hit in chunk)
            if progress:
                progress(min(start + 16, len(todo)), len(todo))
        return computed


def _ordered(hits: list[Any]) -> list[Any]:
    """Best first; ties keep the first-stage order (sorted is stable)."""
    return sorted(hits, key=lambda hit: -hit.score)
