"""FAISS inner-product index over unit vectors, keyed by int64 ids, saved atomically.

The file holds a small header (magic, the generation it reflects) followed by the serialised
FAISS index, so the generation and the vectors are written and renamed as one file.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from pixsearch.errors import LibraryError

_MAGIC = b"PIXIDX01"
_HEADER = struct.Struct("<8sq")


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

    def save(self, path: Path) -> None:
        """Write to a temp file in the same folder, fsync, then rename over `path`."""
        payload = faiss.serialize_index(self._index)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(_HEADER.pack(_MAGIC, self.generation))
                handle.write(payload.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        data = path.read_bytes()
        if len(data) < _HEADER.size:
            raise LibraryError(f"index file {path} is truncated ({len(data)} bytes)")
        magic, generation = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise LibraryError(f"index file {path} is not a pixsearch index (bad header)")
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size))
        return cls(index.d, generation, index)
