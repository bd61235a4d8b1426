"""The clip-retrieval back-end protocol (`POST /knn-service`) over a pixsearch library.

clip-retrieval's client and front end send a JSON body (without a JSON content type) holding
`text`, `image` (base64), `image_url` or `embedding_input`, plus `modality` (which index to
search: "image" or "text"), `num_images`, `num_result_ids` and `deduplicate`; they read back
`[{id, similarity, caption, url}]`. Fields pixsearch has no use for (indice_name, use_mclip,
safety and aesthetic options) are accepted and ignored.

One read here belongs in `SearchService` and should move there: the vector->text search.
"""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.request

import numpy as np
from sqlalchemy import select

from pixsearch.errors import BadImageError, ConfigError, EmptyIndexError
from pixsearch.search import ImageHit, TextHit
from pixsearch.search.service import check_k
from pixsearch.storage import TEXTS
from pixsearch.storage.schema import TextEmbedding, TextRow
from pixsearch.web.context import WebContext
from pixsearch.web.limits import PayloadTooLarge
from pixsearch.web.querying import query_vector
from pixsearch.web.schemas import KnnRequest

DUPLICATE_SIMILARITY = 0.94  # clip-retrieval's threshold for "the same picture"


class ImageUrlRefused(PermissionError):
    """Fetching an image URL is switched off on this server."""


def knn_vector(context: WebContext, request: KnnRequest) -> np.ndarray:
    """The query vector of a knn request: exactly one of text, image, image_url, embedding_input.

    Raises:
        ConfigError: none or several inputs, bad base64, an embedding of the wrong size.
        BadImageError: the image does not decode. ImageUrlRefused: image_url while it is off.
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
    data = _decode_base64(request.image) if request.image else fetch_image(context, request.image_url or "")
    if len(data) > context.options.max_upload_bytes:
        raise PayloadTooLarge(f"image is {len(data)} bytes, over the limit of {context.options.max_upload_bytes}")
    image = context.query_image(data, "query image")
    return query_vector(context, None, image)


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
            "request any URL); send the image itself as base64 in 'image'"
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


def search_images(context: WebContext, vector: np.ndarray, request: KnnRequest) -> list[ImageHit]:
    fetch = max(request.num_result_ids or request.num_images, request.num_images)
    with context.search_lock:
        hits = context.search.vector_to_image(vector, min(fetch, 1000))
        if request.deduplicate:
            hits = _without_near_duplicates(context, hits)
    return hits[: request.num_images]


def _without_near_duplicates(context: WebContext, hits: list[ImageHit]) -> list[ImageHit]:
    """Drop every hit whose stored vector is within DUPLICATE_SIMILARITY of a better-ranked kept hit."""
    if len(hits) < 2:
        return hits
    ids, stored = context.search.vectors_of([hit.image_id for hit in hits])  # caller holds the search lock
    vectors = dict(zip(ids, stored, strict=True))
    kept: list[ImageHit] = []
    kept_vectors: list[np.ndarray] = []
    for hit in hits:
        vector = vectors.get(hit.image_id)
        if (
            vector is not None
            and kept_vectors
            and float(np.max(np.stack(kept_vectors) @ vector)) >= DUPLICATE_SIMILARITY
        ):
            continue
        kept.append(hit)
        if vector is not None:
            kept_vectors.append(vector)
    return kept


def search_texts(context: WebContext, vector: np.ndarray, request: KnnRequest) -> list[TextHit]:
    check_k(request.num_images)
    with context.search_lock:
        index = context.search.index(TEXTS)
        if len(index) == 0:
            raise EmptyIndexError("this library has no texts indexed; run `pixsearch index-texts`")
        scores, ids = index.search(vector[None, :].astype(np.float32), request.num_images)
    pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
    with context.library.session() as session:
        rows = dict(
            session.execute(
                select(TextEmbedding.id, TextRow)
                .join(TextRow, TextRow.id == TextEmbedding.text_id)
                .where(TextEmbedding.id.in_([vector_id for vector_id, _ in pairs]))
            ).all()
        )
    return [
        TextHit(row.id, row.text, row.collection, score) for vector_id, score in pairs if (row := rows.get(vector_id))
    ]
