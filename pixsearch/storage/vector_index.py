"""FAISS inner-product index over unit vectors, keyed by int64 ids, saved atomically.

The file holds a small header (magic, the generation it reflects, a digest of its ids) followed
by the serialised FAISS index, so the generation and the vectors are written and renamed as one
file. The digest lets a reader check the file against the database's rows, not only trust the
generation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np
import numpy.typing as npt

from pixsearch.atomic import write_atomic
from pixsearch.errors import LibraryError

_MAGIC = b"PIXIDX02"
_HEADER = struct.Struct("<8sqqqq")
# the second id checksum: sum of (id * A) mod P, computed the same way in SQL (see Library.vector_digest)
DIGEST_A = 2654435761
DIGEST_P = 4294967291


@dataclass(frozen=True)
class IdDigest:
    """Count and two checksums of a set of vector ids: equal digests mean, in practice, equal sets."""

    count: int
    total: int
    mixed: int

    @classmethod
    def of(cls, ids: npt.NDArray[np.int64]) -> IdDigest:
        ids = np.asarray(ids, dtype=np.int64)
        mixed = (ids * DIGEST_A) % DIGEST_P
        return cls(len(ids), int(ids.sum(dtype=np.int64)), int(mixed.sum(dtype=np.int64)))


def check_vectors(vectors: npt.NDArray[np.float32], dim: int, what: str = "vectors") -> npt.NDArray[np.float32]:
    """Check a float32 [n, dim] array at the FAISS boundary; the message gives the numbers."""
    array = np.asarray(vectors)
    if array.dtype != np.float32:
        raise ValueError(f"{what}: dtype {array.dtype}, expected float32")
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{what}: shape {array.shape}, expected [n, {dim}]")
    return np.ascontiguousarray(array)


class VectorIndex:
    """Exact (flat) inner-product search; ids are the database's embedding row ids."""

    def __init__(self, dim: int, generation: int = 0, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.generation = generation
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def kind(self) -> str:
        return "flat"

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        vectors = check_vectors(vectors, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (vectors.shape[0],):
            raise ValueError(f"ids: shape {ids.shape}, expected ({vectors.shape[0]},) to match the vectors")
        if len(ids):
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: npt.NDArray[np.int64]) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def ids(self) -> npt.NDArray[np.int64]:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k by inner product for each query; missing slots have id -1 and score -inf."""
        queries = check_vectors(queries, self.dim, "queries")
        k = max(1, min(k, max(len(self), 1)))
        scores, ids = self._index.search(queries, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def digest(self) -> IdDigest:
        return IdDigest.of(self.ids())

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename over `path`)."""
        payload = faiss.serialize_index(self._index)
        digest = self.digest()
        header = _HEADER.pack(_MAGIC, self.generation, digest.count, digest.total, digest.mixed)

        def write(handle: BinaryIO) -> None:
            handle.write(header)
            handle.write(payload.tobytes())

        write_atomic(path, write)

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        """Read an index file, checking that its vectors are the ones its header names.

        Raises:
            LibraryError: truncated, not a pixsearch index (or an older format), or inconsistent.
        """
        data = path.read_bytes()
        if len(data) < _HEADER.size:
            raise LibraryError(f"index file {path} is truncated ({len(data)} bytes)")
        magic, generation, count, total, mixed = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise LibraryError(f"index file {path} is not a pixsearch index of this version (header {magic!r})")
        index = cls(0, generation, faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size)))
        index.dim = index._index.d
        if index.digest() != IdDigest(count, total, mixed):
            raise LibraryError(f"index file {path} does not hold the vectors its header names")
        return index
