"""A library: one folder holding the database and the FAISS index files.

The database is the source of truth, vectors included. Each index file records the generation
of the rows it reflects and a digest of its ids; every transaction that changes vectors bumps the
generation in the same transaction. An index file whose generation or digest differs from the
database (a run killed before it saved the index, a file from elsewhere) is rebuilt from the stored
vectors on open, so SQL rows and index never disagree.

Writers (index, index-texts, tag, a re-index) hold the library's writer lock for their whole run
(`Library.writing`); only a lock holder writes index files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import BigInteger, cast, delete, func, select
from sqlalchemy.orm import Session

from pixsearch.atomic import TMP_SUFFIX
from pixsearch.errors import LibraryError, ModelMismatchError
from pixsearch.storage.ann import IndexChoice
from pixsearch.storage.catch_up import Stored, catch_up
from pixsearch.storage.db import make_engine, session_factory, sqlite_url
from pixsearch.storage.lock import WriterLock, schema_lock
from pixsearch.storage.migrations import migrate
from pixsearch.storage.schema import Embedding, ImageRow, Meta, ModelRow, TextEmbedding
from pixsearch.storage.vector_file import VectorStore, arrays_of_rows, write_vector_file
from pixsearch.storage.vector_index import DIGEST_A, DIGEST_P, IdDigest, VectorIndex

log = logging.getLogger(__name__)

IMAGES = "images"
TEXTS = "texts"
_VECTOR_TABLES = {IMAGES: Embedding, TEXTS: TextEmbedding}
_OWNER_COLUMNS = {IMAGES: Embedding.image_id, TEXTS: TextEmbedding.text_id}


def model_key(spec: str, preprocess_id: str) -> str:
    """The short name of a (spec, preprocessing) pair; vectors of different keys never mix."""
    return hashlib.sha256(f"{spec}\n{preprocess_id}".encode()).hexdigest()[:16]


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class Library:
    """Open with `Library.open(root)`; `root` is created if missing."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.db_url = db_url or sqlite_url(self.root / "pixsearch.db")
        self.index_dir = self.root / "index"
        self._engine = None
        self._sessions = None
        self._writer = WriterLock(self.root)

    @classmethod
    def open(cls, root: Path, db_url: str | None = None) -> Library:
        library = cls(root, db_url)
        try:
            library.index_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise LibraryError(f"cannot create library folder {library.root}: {error.strerror}") from error
        library._engine = make_engine(library.db_url)
        with schema_lock(library.root):
            migrate(library._engine)
        library._sessions = session_factory(library._engine)
        return library

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    @contextmanager
    def writing(self, what: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the library's writer lock for a run (`what` names it in the "busy" message of others).

        Raises:
            LibraryBusyError: another process is writing, and did not finish within `wait_s` seconds.
        """
        first = not self._writer.held
        self._writer.acquire(what, wait_s)
        try:
            if first:
                self._remove_leftovers()
            yield
        finally:
            self._writer.release()

    def _remove_leftovers(self) -> None:
        """Temp index files of a killed writer: only a lock holder writes them, so none is in use now."""
        for leftover in self.index_dir.glob(f"*{TMP_SUFFIX}"):
            log.info("removing %s, left by an interrupted run", leftover)
            leftover.unlink(missing_ok=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        if self._sessions is None:
            raise LibraryError("library is not open; use Library.open()")
        with self._sessions.begin() as session:
            yield session

    # -- meta -----------------------------------------------------------------------------
    @staticmethod
    def get_meta(session: Session, key: str) -> str | None:
        return session.execute(select(Meta.value).where(Meta.key == key)).scalar_one_or_none()

    @staticmethod
    def set_meta(session: Session, key: str, value: str) -> None:
        row = session.get(Meta, key)
        if row is None:
            session.add(Meta(key=key, value=value))
        else:
            row.value = value

    def generation(self, session: Session, kind: str, key: str) -> int:
        return int(self.get_meta(session, f"generation:{kind}:{key}") or 0)

    def bump_generation(self, session: Session, kind: str, key: str) -> int:
        value = self.generation(session, kind, key) + 1
        self.set_meta(session, f"generation:{kind}:{key}", str(value))
        return value

    def bump_all_generations(self, session: Session, kind: str) -> None:
        """After a change that touches every model's vectors (deleted images)."""
        for key in session.execute(select(ModelRow.key)).scalars():
            self.bump_generation(session, kind, key)

    @staticmethod
    def vector_digest(session: Session, kind: str, key: str) -> IdDigest:
        """Count and checksums of the stored vector ids of `key`, as `IdDigest.of` computes them."""
        table = _VECTOR_TABLES[kind]
        count, total, mixed = session.execute(
            # BIGINT: on PostgreSQL `id` is a 32-bit INTEGER and id * DIGEST_A would overflow it
            select(
                func.count(), func.sum(table.id), func.sum((cast(table.id, BigInteger) * DIGEST_A) % DIGEST_P)
            ).where(table.model_key == key)
        ).one()
        return IdDigest(int(count), int(total or 0), int(mixed or 0))

    # -- photo folders ----------------------------------------------------------------------
    def photo_roots(self, session: Session) -> list[str]:
        """The folders this library has indexed (resolved paths); only files below them are ever served."""
        raw = self.get_meta(session, "photo_roots")
        return list(json.loads(raw)) if raw else []

    def add_photo_roots(self, session: Session, roots: Sequence[Path | str]) -> None:
        known = self.photo_roots(session)
        merged = sorted(set(known) | {str(root) for root in roots})
        if merged != known:
            self.set_meta(session, "photo_roots", json.dumps(merged))

    # -- models ---------------------------------------------------------------------------
    def active_model(self, session: Session) -> ModelRow | None:
        key = self.get_meta(session, "active_model")
        return session.get(ModelRow, key) if key else None

    def use_model(self, session: Session, spec: str, preprocess_id: str, dim: int, switch: bool = False) -> ModelRow:
        """The model row of (spec, preprocessing) for a writer; refuse another model than the active one
        unless `switch`. A switch does not change the active model: searches keep the old one until
        `complete_switch` finds every image embedded with the new one.

        Raises:
            ModelMismatchError: the library holds vectors of another model and `switch` is False.
        """
        key = model_key(spec, preprocess_id)
        active = self.active_model(session)
        if active is not None and active.key != key and not switch:
            pending = " (an earlier re-index to it did not finish)" if self.pending_model(session) == key else ""
            raise ModelMismatchError(
                f"library {self.root} was indexed with {active.spec} (preprocessing {active.preprocess_id}); "
                f"asked for {spec} (preprocessing {preprocess_id}){pending}. Pass --reindex to re-embed every "
                "image with the new model, or use another --library"
            )
        row = session.get(ModelRow, key)
        if row is None:
            row = ModelRow(key=key, spec=spec, preprocess_id=preprocess_id, dim=dim)
            session.add(row)
        if active is None:
            self.set_meta(session, "active_model", key)
        elif active.key != key:
            self.set_meta(session, "pending_model", key)
        return row

    def pending_model(self, session: Session) -> str | None:
        """The key of a model a re-index is switching to (not yet searched), if any."""
        return self.get_meta(session, "pending_model")

    def complete_switch(self, session: Session, key: str) -> int:
        """Make `key` the active model if every image has a vector of it, dropping the other models' vectors.

        Returns:
            How many images still lack a vector of `key` (0: switched; else the old model stays active).
        """
        with_vector = select(Embedding.image_id).where(Embedding.model_key == key)
        missing = session.execute(
            select(func.count()).select_from(ImageRow).where(ImageRow.id.not_in(with_vector))
        ).scalar_one()
        if missing:
            return int(missing)
        self.set_meta(session, "active_model", key)
        session.execute(delete(Meta).where(Meta.key == "pending_model"))
        self.drop_other_models(session, keep=key)
        return 0

    def query_model(self, session: Session) -> str | None:
        """The text model this library answers word queries with, if not its dual encoder's own."""
        active = self.active_model(session)
        return self.get_meta(session, f"query_model:{active.key}") if active else None

    def set_query_model(self, session: Session, spec: str | None) -> None:
        """Carry `spec` (a text encoder into this library's image space) for queries; None: the dual encoder's own."""
        active = self.active_model(session)
        if active is None:
            raise LibraryError(f"library {self.root} has no model yet; index some photos first")
        key = f"query_model:{active.key}"
        if spec is None:
            session.execute(delete(Meta).where(Meta.key == key))
        else:
            self.set_meta(session, key, spec)

    def drop_other_models(self, session: Session, keep: str) -> int:
        """Delete the vectors of every model but `keep` (after a completed re-index)."""
        removed = 0
        session.execute(delete(Meta).where(Meta.key.like("generation:%"), Meta.key.not_like(f"generation:%:{keep}")))
        for kind, table in _VECTOR_TABLES.items():
            removed += session.execute(delete(table).where(table.model_key != keep)).rowcount or 0
            for path in self.index_dir.glob(f"{kind}-*"):  # index and vector files
                if not path.name.startswith(f"{kind}-{keep}"):
                    path.unlink(missing_ok=True)
        return removed

    # -- vector indexes -------------------------------------------------------------------
    def index_path(self, kind: str, key: str) -> Path:
        return self.index_dir / f"{kind}-{key}.faiss"

    def index_choice(self, session: Session) -> IndexChoice:
        """The index type this library asks for (`auto` unless set with `set_index_choice`)."""
        raw = self.get_meta(session, "index_type")
        return IndexChoice.parse(raw) if raw else IndexChoice()

    def set_index_choice(self, session: Session, choice: IndexChoice) -> None:
        """Ask for another index type; a writer builds it at its next save (`save_index`)."""
        self.set_meta(session, "index_type", str(choice))

    def load_index(self, kind: str, model: ModelRow, persist: bool = True) -> VectorIndex:
        """The index of `kind` for `model`, rebuilt from stored vectors if its file is stale.

        The file is trusted only when its generation and its id digest both match the database.
        A rebuilt index is saved only with `persist` and the writer lock held (readers never write files).
        """
        path = self.index_path(kind, model.key)
        with self.session() as session:
            generation = self.generation(session, kind, model.key)
            digest = self.vector_digest(session, kind, model.key)
        for _attempt in range(3):  # a writer may replace the index and its vector file while we read them
            stamp = _stamp(path)
            if stamp is None:
                break
            try:
                index = VectorIndex.load(path)
            except (LibraryError, RuntimeError, OSError) as error:
                if _stamp(path) != stamp:
                    continue
                log.warning("index %s unreadable (%s): rebuilding from stored vectors", path, error)
                break
            if index.generation == generation and index.dim == model.dim and index.digest() == digest:
                return index
            if index.dim == model.dim and self._caught_up(index, kind, model):
                if persist and self._writer.held:
                    self.save_index(kind, model.key, index)
                return index
            log.warning(
                "index %s (generation %d, %d vectors) disagrees with the database (generation %d, %d vectors): "
                "rebuilding from stored vectors",
                path,
                index.generation,
                len(index),
                generation,
                digest.count,
            )
            break
        return self.rebuild_index(kind, model, persist)

    def _caught_up(self, index: VectorIndex, kind: str, model: ModelRow) -> bool:
        """Bring an index file that lags behind the database up to date in memory (see `catch_up`);
        False when it cannot be, or the database changed meanwhile (then the caller rebuilds)."""
        stored = Stored(_VECTOR_TABLES[kind], _OWNER_COLUMNS[kind], model.key)
        with self.session() as session:
            # a writer bumps the generation in the transaction that changes the vectors: the same
            # generation before and after means every read in between saw one state of the database
            before = self.generation(session, kind, model.key)
            digest = self.vector_digest(session, kind, model.key)
            done = catch_up(index, session, stored, digest)
            after = self.generation(session, kind, model.key)
        if done and before == after:
            index.generation = after
            return True
        return False

    def rebuild_index(self, kind: str, model: ModelRow, persist: bool = True) -> VectorIndex:
        """The index of the stored vectors, of the type the library asks for. With `persist` and the
        writer lock, the vectors stream from the database into a new vector file (a million need not
        fit in memory) and the index is saved; otherwise it is held in memory."""
        save = persist and self._writer.held
        path = self.index_path(kind, model.key)
        with self.session() as session:
            generation = self.generation(session, kind, model.key)
            count = self.count_vectors(session, kind, model.key)
            choice = self.index_choice(session)
            chunks = self._stored_chunks(session, kind, model)
            if save:
                token = secrets.token_bytes(16)
                vectors = path.with_name(f"{path.stem}-{token.hex()}.vectors")
                write_vector_file(vectors, model.dim, count, chunks, token)
            else:
                store = _in_memory(model.dim, count, chunks)
        if save:
            with self.session() as session:
                digest = self.vector_digest(session, kind, model.key)
            store = VectorStore.open(vectors, digest, model.dim, token.hex())
        index = VectorIndex(model.dim, generation, store)
        index.fit(choice)
        if save:
            index.save(path)
        return index

    @staticmethod
    def _stored_chunks(session: Session, kind: str, model: ModelRow, size: int = 4096):
        """(ids, owners, vectors) of the stored vectors of `model`, ascending by id, `size` rows at a time."""
        table, owner = _VECTOR_TABLES[kind], _OWNER_COLUMNS[kind]
        query = select(table.id, owner, table.vector).where(table.model_key == model.key).order_by(table.id)
        rows = []
        for row in session.execute(query).yield_per(size):
            rows.append(row)
            if len(rows) == size:
                yield arrays_of_rows(rows, model.dim)
                rows = []
        if rows:
            yield arrays_of_rows(rows, model.dim)

    def save_index(self, kind: str, key: str, index: VectorIndex) -> None:
        """Write an index file, first making it the type the library asks for at its size (an IVF-PQ
        index is built once the library passes the threshold, and retrained when it has grown 4x);
        only the holder of the writer lock may (two writers would overwrite each other)."""
        if not self._writer.held:
            raise LibraryError(f"index of library {self.root} written without holding its writer lock")
        with self.session() as session:
            choice = self.index_choice(session)
        index.fit(choice)
        index.save(self.index_path(kind, key))

    def count_vectors(self, session: Session, kind: str, key: str) -> int:
        table = _VECTOR_TABLES[kind]
        return session.execute(select(func.count()).select_from(table).where(table.model_key == key)).scalar_one()


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (inode, modification time), None if none."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


def _in_memory(dim: int, count: int, chunks) -> VectorStore:
    ids = np.empty(count, dtype=np.int64)
    owners = np.empty(count, dtype=np.int64)
    vectors = np.empty((count, dim), dtype=np.float32)
    done = 0
    for chunk_ids, chunk_owners, chunk_vectors in chunks:
        end = done + len(chunk_ids)
        ids[done:end], owners[done:end], vectors[done:end] = chunk_ids, chunk_owners, chunk_vectors
        done = end
    return VectorStore.from_arrays(ids[:done], owners[:done], vectors[:done])
