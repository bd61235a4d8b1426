"""The clip-retrieval back-end protocol (`POST /knn-service`) over a pixsearch library.

clip-retrieval's client and front end send a JSON body (without a JSON content type) holding
`text`, `image` (base64), `image_url` or `embedding_input`, plus `modality` (which index to
search: "image" or "text"), `num_images`, `num_result_ids`, `indice_name` and `deduplicate`.
Like clip-retrieval's back end, the answer holds `num_result_ids` hits (`num_images` when absent),
and only the first `num_images` carry their metadata (`caption`, `url`); the front end asks
`/metadata` for the rest while the page scrolls. Options pixsearch has no use for (use_mclip,
safety and aesthetic options) are accepted and ignored.

Differences from clip-retrieval, on purpose: a text-modality search answers `num_images` texts with
their captions and no more ids (pixsearch's texts and photos are separate collections, so `/metadata`,
which answers for photos, cannot page through texts); an `image_url` is fetched only when the server
allows it, except a URL of this server's own photos (`/api/images/{id}/file` or `/thumbnail`), which
is answered from the stored vector without fetching anything.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from pixsearch.errors import BadImageError, ConfigError, EmptyIndexError, NotFoundError
from pixsearch.storage import IMAGES, TEXTS
from pixsearch.storage.schema import Embedding as EmbeddingRow
from pixsearch.storage.schema import TextEmbedding, TextRow
from pixsearch.web.context import WebContext
from pixsearch.web.limits import PayloadTooLarge
from pixsearch.web.querying import query_vector
from pixsearch.web.schemas import KNN_MAX, KnnRequest

INDEX_NAME = "pixsearch"  # the one index a server offers (/indices-list)
DUPLICATE_SIMILARITY = 0.94  # clip-retrieval's threshold for "the same picture" (strictly above it)
_BLOCK = 1024  # rows of the similarity matrix computed at once when deduplicating
_OWN_IMAGE = re.compile(r"/api/images/([1-9][0-9]{0,17})/(?:file|thumbnail)")


class ImageUrlRefused(PermissionError):
    """Fetching an image URL is switched off on this server."""


@dataclass(frozen=True)
class KnnHit:
    id: int  # an image id, or a text id for the text modality
    similarity: float


def check_index_name(name: str | None) -> None:
    """clip-retrieval's `indice_name`: absent or empty means the server's only index.

    Raises:
        NotFoundError: naming the index asked for and the one there is.
    """
    if name and name != INDEX_NAME:
        raise NotFoundError(f"no index named {name!r} on this server; it has one, {INDEX_NAME!r} (GET /indices-list)")


def knn_vector(context: WebContext, request: KnnRequest, base_url: str) -> np.ndarray:
    """The query vector of a knn request: exactly one of text, image, image_url, embedding_input.

    `base_url` is this server's own address as the client sees it: an image_url below it naming one
    of the library's photos is answered from the photo's stored vector.

    Raises:
        ConfigError: none or several inputs, bad base64, an embedding of the wrong size.
        BadImageError: the image does not decode. ImageUrlRefused: image_url while it is off.
        NotFoundError: an image_url of this server names no photo of the library.
    """
    given = [name for name in ("text", "image", "image_url", "embedding_input") if getattr(request, name)]
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of text, image, image_url, embedding_input"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if request.text:
        return query_vector(context, request.text, None)
    if request.embedding_input:
        return _embedding(context, request.embedding_input)
    if request.image_url and (image_id := own_image_id(request.image_url, base_url)) is not None:
        with context.search_lock:
            return context.search.stored_vector(image_id)
    data = _decode_base64(request.image) if request.image else fetch_image(context, request.image_url or "")
    if len(data) > context.options.max_upload_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes, over the limit of {context.options.max_upload_bytes}")
    image = context.query_image(data, "query image")
    return query_vector(context, None, image)


def own_image_id(url: str, base_url: str) -> int | None:
    """The image id when `url` is this server's file or thumbnail URL of a photo (any query), else None."""
    try:
        parts, base = urlsplit(url.strip()), urlsplit(base_url)
    except ValueError:
        return None
    if parts.netloc.lower() != base.netloc.lower() or parts.scheme.lower() not in {"http", "https"}:
        return None
    prefix = base.path.rstrip("/")
    if not parts.path.startswith(prefix + "/"):
        return None
    match = _OWN_IMAGE.fullmatch(parts.path[len(prefix) :])
    return int(match.group(1)) if match else None


def _embedding(context: WebContext, values: list[float]) -> np.ndarray:
    with context.search_lock:
        dim = context.search.model.dim
    vector = np.asarray(values, dtype=np.float64)
    if vector.shape != (dim,):
        raise ConfigError(f"embedding_input has {vector.size} values; this library's model has {dim}")
    if not np.isfinite(vector).all():
        raise ConfigError("embedding_input must hold finite numbers")
    peak = float(np.abs(vector).max())
    if peak == 0.0:
        raise ConfigError("embedding_input must not be all zeros")
    vector = vector / peak  # first, so that squaring values near the float limits cannot overflow
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _decode_base64(text: str) -> bytes:
    if "," in text[:100] and text.startswith("data:"):
        text = text.split(",", 1)[1]  # a data: URL, as browsers make them
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("image is not valid base64") from None


def fetch_image(context: WebContext, url: str) -> bytes:
    """Download `url`, only when the server allows it (it lets a client make this server fetch URLs).

    Raises:
        ImageUrlRefused: allow_image_url is off. BadImageError: the download failed or is too big.
    """
    if not context.options.allow_image_url:
        raise ImageUrlRefused(
            "fetching image_url is switched off on this server (it would let clients make the server "
            "request any URL); send the image itself as base64 in 'image', or a URL of this server's own photos"
        )
    if not url.lower().startswith(("http://", "https://")):
        raise ConfigError("image_url must be an http:// or https:// URL")
    limit = context.options.max_upload_bytes
    request = urllib.request.Request(url, headers={"User-Agent": "pixsearch"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - scheme checked above
            data = response.read(limit + 1)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise BadImageError(url, f"download failed ({getattr(error, 'reason', error)})") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"{url}: download is over the limit of {limit} bytes")
    return data


def nearest(context: WebContext, vector: np.ndarray, request: KnnRequest) -> list[KnnHit]:
    """The hits of a knn request, best first: photos (modality "image") or texts ("text").

    Raises:
        EmptyIndexError: nothing of that modality is indexed.
    """
    texts = request.modality == "text"
    count = request.num_images if texts else min(request.num_result_ids or request.num_images, KNN_MAX)
    table, owner = (TextEmbedding, TextEmbedding.text_id) if texts else (EmbeddingRow, EmbeddingRow.image_id)
    with context.search_lock:
        index = context.search.index(TEXTS if texts else IMAGES)
        if len(index) == 0:
            what = "texts indexed; run `pixsearch index-texts`" if texts else "photos indexed; run `pixsearch index`"
            raise EmptyIndexError(f"this library has no {what}")
        scores, ids = index.search(vector[None, :].astype(np.float32), min(count, len(index)))
    pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    columns = (table.id, owner, table.vector) if request.deduplicate else (table.id, owner)
    with context.library.session() as session:
        rows = {row[0]: row[1:] for row in session.execute(select(*columns).where(table.id.in_([i for i, _ in pairs])))}
    pairs = [(vector_id, score) for vector_id, score in pairs if vector_id in rows]
    if request.deduplicate and len(pairs) > 1:
        vectors = np.stack([np.frombuffer(rows[vector_id][1], dtype=np.float32) for vector_id, _ in pairs])
        pairs = [pairs[i] for i in first_of_each_group(vectors)]
    return [KnnHit(rows[vector_id][0], score) for vector_id, score in pairs]


def first_of_each_group(vectors: npt.NDArray[np.float32], threshold: float = DUPLICATE_SIMILARITY) -> list[int]:
    """clip-retrieval's deduplication: link every two vectors whose similarity is above `threshold`,
    and keep the first (best-ranked) of each connected group; returns the kept row numbers in order.

    Memory is one byte per pair (100 MB for 10,000 hits), whatever the number of links.
    """
    count = len(vectors)
    near = np.empty((count, count), dtype=bool)
    for start in range(0, count, _BLOCK):
        np.greater(vectors[start : start + _BLOCK] @ vectors.T, threshold, out=near[start : start + _BLOCK])
    linked = near.sum(axis=1) > 1  # more than itself: most hits of a real library are alone
    unseen = np.ones(count, dtype=bool)
    kept = []
    for first in range(count):
        if not unseen[first]:
            continue
        kept.append(first)
        unseen[first] = False
        frontier = np.array([first] if linked[first] else [], dtype=np.int64)
        while frontier.size:  # breadth-first through the group: each row is read once in all
            reached = near[frontier].any(axis=0) & unseen
            unseen[reached] = False
            frontier = np.flatnonzero(reached)
    return kept


def texts_of(context: WebContext, text_ids: list[int]) -> dict[int, str]:
    """Text id -> the text, for the texts that exist."""
    with context.library.session() as session:
        rows = session.execute(select(TextRow.id, TextRow.text).where(TextRow.id.in_(text_ids)))
        return {text_id: text for text_id, text in rows}
