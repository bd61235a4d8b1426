"""A library's vector index: exact below a size, IVF-PQ with an exact re-rank above it.

On disk an index is two files in the library's `index/` folder:
- `<kind>-<key>.faiss`: a header (magic, the generation it reflects, a digest of its ids), a JSON
  record of its type and parameters and of the vector file it goes with, then the serialised
  IVF-PQ index (nothing more for a flat index);
- `<kind>-<key>-<token>.vectors`: the full-precision vectors with their ids and owners
  (`pixsearch.storage.vector_file`), memory-mapped by readers.
The index file is written last and names its vector file by a random token, so a reader sees the
old pair or the new pair, never half of each; a vector file is only rewritten when its vectors
changed. Every part is checked against the header's digest on load.
"""

from __future__ import annotations

import json
import logging
import secrets
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from pixsearch.atomic import write_atomic
from pixsearch.errors import LibraryError
from pixsearch.storage.ann import FLAT, IVFPQ, Gpu, IndexChoice, IvfPq, IvfPqParams
from pixsearch.storage.vector_file import (
    DIGEST_A,
    DIGEST_P,
    IdDigest,
    VectorStore,
    check_vectors,
    top_k,
    write_vector_file,
)

__all__ = ["DIGEST_A", "DIGEST_P", "IdDigest", "VectorIndex", "check_vectors", "describe", "read_index_record"]

log = logging.getLogger(__name__)

_MAGIC = b"PIXIDX03"
_HEADER = struct.Struct("<8sqqqqq")  # magic, generation, id count, id sum, id mixed sum, record length
_TRAIN_PER_CELL = 40


class VectorIndex:
    """Inner-product search over unit vectors keyed by the database's embedding row ids.

    Each vector has an owner (its image or text row), so the search path maps ids to images and
    reads the vectors of hits from here, never from SQL.
    """

    def __init__(self, dim: int, generation: int = 0, store: VectorStore | None = None, ann: IvfPq | None = None):
        self.dim = dim
        self.generation = generation
        self._store = store if store is not None else VectorStore(dim)
        self._ann = ann
        if ann is not None:
            self._store.read_sparsely()

    def __len__(self) -> int:
        return len(self._store)

    @property
    def kind(self) -> str:
        return FLAT if self._ann is None else IVFPQ

    @property
    def params(self) -> IvfPqParams | None:
        return None if self._ann is None else self._ann.params

    @property
    def on_gpu(self) -> bool:
        """Whether a GPU builds the IVF-PQ part (faiss-gpu and a CUDA device; a flat index has none)."""
        return self._ann is not None and self._ann.on_gpu

    @property
    def mapped_file(self) -> Path | None:
        """The vector file the vectors are read from (memory-mapped); None while they are only in memory."""
        return self._store.path

    def describe(self) -> str:
        """The type and its parameters, in words (for `pixsearch status`)."""
        return describe(self.params)

    # -- changes --------------------------------------------------------------------------
    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], owners: npt.NDArray[np.int64]) -> None:
        """Add vectors under new ids; `owners` are their image (or text) row ids."""
        vectors = check_vectors(vectors, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (vectors.shape[0],):
            raise ValueError(f"ids: shape {ids.shape}, expected ({vectors.shape[0]},) to match the vectors")
        if not len(ids):
            return
        self._store.add(ids, owners, vectors)
        if self._ann is not None:
            self._ann.add(ids, vectors)

    def remove(self, ids: npt.NDArray[np.int64]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        removed = self._store.remove(ids)
        if self._ann is not None:
            self._ann.forget(removed)
            if self._ann.stale > len(self):  # more dead codes than live ones: encode the live ones again
                self._refill()
        return removed

    def _refill(self) -> None:
        self._ann.refill((ids, vectors) for ids, _, vectors in self._store.chunks())

    def fit(self, choice: IndexChoice) -> bool:
        """Make the index the type `choice` asks for at its size: build or retrain the IVF-PQ part from
        the vectors held here (no re-embedding), or drop it. Returns whether anything was rebuilt."""
        count = len(self)
        if not choice.needs_rebuild(self.kind, self.params, count):
            if self._ann is not None:
                self._ann.params = choice.search_params(self._ann.params)
            return False
        if choice.kind_for(count, self.kind) == FLAT:
            log.info("index of %d vectors: exact search", count)
            self._ann = None
            return True
        params = choice.search_params(choice.ivfpq_params(count, self.dim))
        log.info("building an IVF-PQ index over %d vectors (%s)", count, params)
        sample = self._store.sample(max(_TRAIN_PER_CELL * params.nlist, 64 * 2**params.nbits))
        ann = IvfPq.train(params, sample, Gpu.find())
        for ids, _, vectors in self._store.chunks():
            ann.add(ids, vectors)
        self._ann = ann
        self._store.read_sparsely()
        return True

    # -- reads ----------------------------------------------------------------------------
    def ids(self) -> npt.NDArray[np.int64]:
        return self._store.ids()

    def digest(self) -> IdDigest:
        return IdDigest.of(self.ids())

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k by inner product for each query; missing slots have id -1 and score -inf. Scores are
        exact (an IVF-PQ index's candidates are re-scored against the full vectors)."""
        queries = check_vectors(queries, self.dim, "queries")
        k = max(1, min(k, max(len(self), 1)))
        if self._ann is None:
            return self._store.search(queries, k)
        candidates = self._ann.candidates(queries, max(self._ann.params.rerank, k) + self._ann.stale)
        candidates = np.sort(candidates, axis=1)
        # an id removed and added again has two codes: score it once
        candidates[:, 1:][candidates[:, 1:] == candidates[:, :-1]] = -1
        found, vectors = self._store.vectors_of(candidates.ravel())  # a removed id is not found
        vectors = vectors.reshape(*candidates.shape, self.dim)
        scores = np.einsum("qcd,qd->qc", vectors, queries)
        ok = found.reshape(candidates.shape) & (candidates >= 0)
        return top_k(np.where(ok, scores, -np.inf), np.where(ok, candidates, -1), k)

    def vectors_of(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
        """(found, vectors) of vector ids (see `VectorStore.vectors_of`)."""
        return self._store.vectors_of(ids)

    def owners_of(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The image (or text) row of each vector id; -1 where the id is not in the index."""
        return self._store.owners_of(ids)

    def ids_of_owners(self, owners: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The vector id of each image (or text) row; -1 where it has none."""
        return self._store.ids_of_owners(owners)

    def chunks(self, size: int = 65536):
        """(ids, owners, vectors) of every vector, ascending by id, a chunk at a time."""
        return self._store.chunks(size)

    def resident_bytes(self) -> int:
        """What the index keeps in memory besides the mapped vector file (the IVF-PQ codes; a flat
        index none: its vectors are the file's)."""
        return 0 if self._ann is None else self._ann.resident_bytes()

    # -- files ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the vector file (when its vectors changed) and then the index file, each atomically;
        vector files of this index that the new index file does not name are removed."""
        if self._ann is not None and self._ann.stale:
            self._refill()  # the file holds the codes of exactly the vectors there are
        digest = self.digest()
        vectors = _vector_path(path, self._store.token) if self._store.token else None
        if vectors is None or self._store.changed or not vectors.exists():
            token = secrets.token_bytes(16)
            vectors = _vector_path(path, token.hex())
            write_vector_file(vectors, self.dim, len(self), self._store.chunks(), token)
            self._store = VectorStore.open(vectors, digest, self.dim, token.hex())  # from now on, mapped
            if self._ann is not None:
                self._store.read_sparsely()
        record = {
            "type": self.kind,
            "dim": self.dim,
            "vectors": vectors.name,
            "token": self._store.token,
            "params": None if self._ann is None else self._ann.params.to_json(),
        }
        raw = json.dumps(record).encode()
        header = _HEADER.pack(_MAGIC, self.generation, digest.count, digest.total, digest.mixed, len(raw))

        def write(handle: BinaryIO) -> None:
            handle.write(header + raw)
            if self._ann is not None:
                self._ann.write(handle)

        write_atomic(path, write)
        for other in path.parent.glob(f"{path.stem}-*.vectors"):
            if other.name != vectors.name:
                other.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """Read an index file and map its vector file, checking both hold the ids the header names.

        Raises:
            LibraryError: truncated, not a pixsearch index (or an older format), inconsistent, or its
                vector file missing, truncated or another's.
        """
        with open(path, "rb") as handle:
            generation, digest, record = _read_head(path, handle)
            try:
                dim, kind = int(record["dim"]), record["type"]
                store = VectorStore.open(path.parent / record["vectors"], digest, dim, record["token"])
                ann = IvfPq.read(handle, IvfPqParams(**record["params"]), Gpu.find()) if kind == IVFPQ else None
            except (KeyError, TypeError, ValueError) as error:
                raise LibraryError(f"index file {path} has a malformed record ({error})") from None
        if ann is not None and IdDigest.of(ann.ids()) != digest:
            raise LibraryError(f"index file {path} does not hold the vectors its header names")
        return cls(dim, generation, store, ann)


def describe(params: IvfPqParams | None) -> str:
    """An index type and its parameters in words: `params` None for a flat index."""
    if params is None:
        return "flat (exact inner product)"
    return (
        f"ivfpq (nlist {params.nlist}, m {params.m}x{params.nbits} bits, nprobe {params.nprobe}, exact re-rank "
        f"of the best {params.rerank}; trained at {params.trained_on} vectors)"
    )


def _vector_path(index_path: Path, token: str) -> Path:
    return index_path.with_name(f"{index_path.stem}-{token}.vectors")


def _read_head(path: Path, handle: BinaryIO) -> tuple[int, IdDigest, dict]:
    head = handle.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise LibraryError(f"index file {path} is truncated ({len(head)} bytes)")
    magic, generation, count, total, mixed, length = _HEADER.unpack(head)
    if magic != _MAGIC:
        raise LibraryError(f"index file {path} is not a pixsearch index of this version (header {magic!r})")
    raw = handle.read(length)
    try:
        record = json.loads(raw)
    except ValueError:
        raise LibraryError(f"index file {path} is truncated or damaged (its record does not parse)") from None
    if not isinstance(record, dict):
        raise LibraryError(f"index file {path} has a malformed record")
    return generation, IdDigest(count, total, mixed), record


def read_index_record(path: Path) -> dict | None:
    """What an index file says about itself, without loading it: its record (type, parameters, vector
    file), generation, count, a description and the bytes of both files; None when it is unreadable."""
    try:
        with open(path, "rb") as handle:
            generation, digest, record = _read_head(path, handle)
        params = IvfPqParams(**record["params"]) if record.get("params") else None
        vectors = path.parent / str(record["vectors"])
        size = path.stat().st_size + (vectors.stat().st_size if vectors.exists() else 0)
    except (OSError, LibraryError, KeyError, TypeError):
        return None
    return {**record, "generation": generation, "count": digest.count, "description": describe(params), "bytes": size}
