"""What a library holds: counts, model, index files, skipped files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from pixsearch.storage.library import IMAGES, TEXTS, Library
from pixsearch.storage.schema import ImageRow, ModelRow, SkippedFile, TextRow
from pixsearch.storage.vector_index import read_index_record


@dataclass
class LibraryStatus:
    root: str
    database: str
    images: int = 0
    image_vectors: int = 0
    texts: int = 0
    text_vectors: int = 0
    model: str | None = None
    query_model: str | None = None
    pending_model: str | None = None  # a re-index switching to this model has not finished
    preprocess_id: str | None = None
    dim: int | None = None
    index_type: str | None = None  # what the image index file holds, with its parameters
    index_params: dict | None = None
    index_choice: str = "auto"  # what the library asks for (pixsearch index --index-type)
    index_bytes: int = 0  # index and vector files
    rerank_cache_bytes: int = 0
    rerank_cache_images: int = 0  # feature files, over all rerankers
    rerank_cache_models: list[str] = field(default_factory=list)  # the rerankers with a disk cache
    waiting_shards: int = 0  # vector shards of an `index --ray` run not merged yet (the next index run merges them)
    waiting_shard_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        data = dict(self.__dict__)
        data["skipped"] = [{"path": path, "reason": reason} for path, reason in self.skipped]
        return data


def library_status(library: Library) -> LibraryStatus:
    status = LibraryStatus(root=str(library.root), database=_safe_url(library.db_url))
    with library.session() as session:
        status.images = session.execute(select(func.count()).select_from(ImageRow)).scalar_one()
        status.texts = session.execute(select(func.count()).select_from(TextRow)).scalar_one()
        status.skipped = [
            tuple(row)
            for row in session.execute(select(SkippedFile.path, SkippedFile.reason).order_by(SkippedFile.path))
        ]
        model = library.active_model(session)
        status.index_choice = str(library.index_choice(session))
        status.query_model = library.query_model(session)
        pending = library.pending_model(session)
        pending_row = session.get(ModelRow, pending) if pending else None
        status.pending_model = pending_row.spec if pending_row else None
        if model is not None:
            status.model, status.preprocess_id, status.dim = model.spec, model.preprocess_id, model.dim
            status.image_vectors = library.count_vectors(session, IMAGES, model.key)
            status.text_vectors = library.count_vectors(session, TEXTS, model.key)
    if model is not None:
        for kind in (IMAGES, TEXTS):
            record = read_index_record(library.index_path(kind, model.key))
            status.index_bytes += record["bytes"] if record else 0
            if kind == IMAGES and record:
                status.index_type, status.index_params = record["description"], record["params"]
    from pixsearch.indexer import shards  # light: no torch

    # counted, not read: the next `pixsearch index` (under the writer lock) validates and merges them
    waiting = sorted(shards.folder_of(library.root).glob(f"*{shards.SUFFIX}"))
    status.waiting_shards = len(waiting)
    status.waiting_shard_bytes = sum(_size(path) for path in waiting)
    root = library.root / "rerank-cache"
    if root.is_dir():
        files = list(root.rglob("*.pt"))
        status.rerank_cache_bytes = sum(f.stat().st_size for f in files)
        status.rerank_cache_images = len(files)
        # each reranker's folder names its spec in reranker.txt (rerank.cache.DiskCache)
        status.rerank_cache_models = sorted(f.read_text().strip() for f in root.glob("*/reranker.txt"))
    return status


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # merged by a writer meanwhile
        return 0


def _safe_url(url: str) -> str:
    """The database URL without a password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
