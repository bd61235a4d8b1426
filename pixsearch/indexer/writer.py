"""The indexer's database writes. Each function runs inside the caller's transaction and keeps
the in-memory vector index in step; the caller bumps the generation in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pixsearch.indexer.decode import Failure, Hashed, PhotoFacts
from pixsearch.indexer.diff import Known
from pixsearch.storage import keywords
from pixsearch.storage.library import vector_bytes
from pixsearch.storage.schema import Embedding, ImageRow, SkippedFile
from pixsearch.storage.vector_index import VectorIndex


def under(path: str, roots: Sequence[str]) -> bool:
    """Whether `path` is one of `roots` or lies below one (plain string test: both are resolved paths)."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def known_images(session: Session, roots: Sequence[str], model_key: str) -> dict[str, Known]:
    """Every image row below `roots`, by path, noting whether it has a vector for `model_key`."""
    with_vector = set(session.execute(select(Embedding.image_id).where(Embedding.model_key == model_key)).scalars())
    rows = session.execute(select(ImageRow.id, ImageRow.path, ImageRow.size, ImageRow.mtime, ImageRow.content_hash))
    return {
        path: Known(image_id, path, size, mtime, content_hash, image_id in with_vector)
        for image_id, path, size, mtime, content_hash in rows
        if under(path, roots)
    }


def vectors_by_hash(session: Session, model_key: str) -> dict[str, list[Known]]:
    query = (
        select(ImageRow.id, ImageRow.path, ImageRow.size, ImageRow.mtime, ImageRow.content_hash)
        .join(Embedding, Embedding.image_id == ImageRow.id)
        .where(Embedding.model_key == model_key)
    )
    result: dict[str, list[Known]] = {}
    for image_id, path, size, mtime, content_hash in session.execute(query):
        result.setdefault(content_hash, []).append(Known(image_id, path, size, mtime, content_hash, True))
    return result


def record_failures(session: Session, failures: Iterable[Failure]) -> None:
    now = datetime.now()
    for failure in failures:
        path, reason = failure.path, failure.reason
        row = session.execute(select(SkippedFile).where(SkippedFile.path == path)).scalar_one_or_none()
        if row is None:
            session.add(SkippedFile(path=path, reason=reason, seen_at=now))
        else:
            row.reason, row.seen_at = reason, now


def replace_failures(session: Session, roots: Sequence[str], failures: Sequence[Failure]) -> None:
    """Make the skipped list below `roots` exactly this run's failures (fixed or vanished files drop out)."""
    stale = [path for path in session.execute(select(SkippedFile.path)).scalars() if under(path, roots)]
    clear_failures(session, stale)
    session.flush()
    record_failures(session, {f.path: f for f in failures}.values())


def clear_failures(session: Session, paths: Sequence[str]) -> None:
    if paths:
        session.execute(delete(SkippedFile).where(SkippedFile.path.in_(list(paths))))


def touch(session: Session, image_id: int, item: Hashed) -> None:
    row = session.get(ImageRow, image_id)
    if row is not None:
        row.size, row.mtime = item.size, item.mtime


def move(session: Session, image_id: int, item: Hashed) -> None:
    row = session.get(ImageRow, image_id)
    if row is not None:
        row.path, row.size, row.mtime = item.path, item.size, item.mtime
        session.flush()
        keywords.refresh(session, [image_id])


def copy(session: Session, source_id: int, item: Hashed, model_key: str, index: VectorIndex) -> None:
    """A new image row for `item`, reusing the vector of `source_id` (same bytes)."""
    source = session.get(ImageRow, source_id)
    vector = session.execute(
        select(Embedding.vector).where(Embedding.image_id == source_id, Embedding.model_key == model_key)
    ).scalar_one()
    row = ImageRow(
        path=item.path,
        content_hash=item.content_hash,
        size=item.size,
        mtime=item.mtime,
        width=source.width,
        height=source.height,
        taken_at=source.taken_at,
        camera=source.camera,
        indexed_at=datetime.now(),
    )
    row.embeddings.append(Embedding(model_key=model_key, vector=vector))
    session.add(row)
    session.flush()
    index.add(np.asarray([row.embeddings[0].id]), np.frombuffer(vector, dtype=np.float32)[None, :], [row.id])
    keywords.refresh(session, [row.id])


def delete_images(session: Session, image_ids: Sequence[int], index: VectorIndex) -> None:
    if not image_ids:
        return
    ids = list(image_ids)
    vector_ids = session.execute(select(Embedding.id).where(Embedding.image_id.in_(ids))).scalars().all()
    index.remove(np.asarray(vector_ids, dtype=np.int64))
    session.execute(delete(Embedding).where(Embedding.image_id.in_(ids)))
    session.execute(delete(ImageRow).where(ImageRow.id.in_(ids)))
    keywords.remove(session, ids)


def not_stored(session: Session, items: Sequence[PhotoFacts], model_key: str) -> list[int]:
    """The positions in `items` of the photos the library does not hold yet: no row at that path with
    the same content hash and a vector of `model_key` (what makes merging a shard twice harmless)."""
    query = (
        select(ImageRow.path, ImageRow.content_hash)
        .join(Embedding, Embedding.image_id == ImageRow.id)
        .where(ImageRow.path.in_([item.path for item in items]), Embedding.model_key == model_key)
    )
    stored = {(path, content_hash) for path, content_hash in session.execute(query)}
    return [i for i, item in enumerate(items) if (item.path, item.content_hash) not in stored]


def store_embedded(
    session: Session, items: Sequence[PhotoFacts], vectors: np.ndarray, model_key: str, index: VectorIndex
) -> None:
    """Insert or update the image rows of a batch with their new vectors."""
    paths = [item.path for item in items]
    existing = {row.path: row for row in session.execute(select(ImageRow).where(ImageRow.path.in_(paths))).scalars()}
    stale = (
        session.execute(
            select(Embedding.id).where(
                Embedding.image_id.in_([row.id for row in existing.values()]), Embedding.model_key == model_key
            )
        )
        .scalars()
        .all()
    )
    if stale:
        index.remove(np.asarray(stale, dtype=np.int64))
        session.execute(delete(Embedding).where(Embedding.id.in_(stale)))
    now = datetime.now()
    new_embeddings = []
    for item, vector in zip(items, vectors, strict=True):
        row = existing.get(item.path) or ImageRow(path=item.path)
        row.content_hash, row.size, row.mtime = item.content_hash, item.size, item.mtime
        row.width, row.height, row.taken_at, row.camera = item.width, item.height, item.taken_at, item.camera
        row.indexed_at = now
        embedding = Embedding(model_key=model_key, vector=vector_bytes(vector))
        row.embeddings.append(embedding)
        session.add(row)
        new_embeddings.append(embedding)
    session.flush()
    index.add(
        np.asarray([e.id for e in new_embeddings], dtype=np.int64),
        np.asarray(vectors, dtype=np.float32),
        np.asarray([e.image_id for e in new_embeddings], dtype=np.int64),
    )
    clear_failures(session, paths)
    keywords.refresh(session, [e.image_id for e in new_embeddings])
