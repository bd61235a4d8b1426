"""The full-precision vectors of an index, with their ids and owners, kept in memory or memory-mapped.

A vector file holds, behind a small header (magic, count, dimension, the id digest, a random token
that the index file names): the vector ids sorted ascending (int64 [n]), the owner of each (the image
or text row, int64 [n]), the owners sorted and the row of each (int64 [n] twice: an owner's vector
is found by binary search) and the vectors themselves (float32 [n, d]). Readers map it into memory (mmap), so a search touches only the pages of the vectors
it reads: a million 512-d vectors (2 GB) cost a reader what it touches, not 2 GB. The pages are the
kernel's page cache, shared by every process reading the library and dropped under memory pressure.

`VectorStore` adds the changes of a writer (added and removed vectors) on top of such a base, in
memory, until the writer saves: `write_vector_file` then streams base and changes into a new file.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np
import numpy.typing as npt

from pixsearch.atomic import write_atomic
from pixsearch.errors import LibraryError

_MAGIC = b"PIXVEC01"
_HEADER = struct.Struct("<8sqqqqq16s")
_ALIGN = 4096  # arrays start on page boundaries, so each maps cleanly
# the second id checksum: sum of (id * A) mod P, computed the same way in SQL (see Library.vector_digest)
DIGEST_A = 2654435761
DIGEST_P = 4294967291
_CHUNK = 65536


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


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _layout(count: int, dim: int) -> tuple[int, int, int, int, int, int]:
    """Offsets of the ids, the owners, the owners sorted and the rows in that order, the vectors; the file's size."""
    ids = _aligned(_HEADER.size)
    owners = ids + 8 * count
    owner_keys = owners + 8 * count
    owner_rows = owner_keys + 8 * count
    vectors = _aligned(owner_rows + 8 * count)
    return ids, owners, owner_keys, owner_rows, vectors, vectors + 4 * dim * count


class _Growing:
    """Rows appended in place (capacity doubles), so a writer adding batch after batch copies each once."""

    def __init__(self, dim: int) -> None:
        self.size = 0
        self.ids = np.empty(0, dtype=np.int64)
        self.owners = np.empty(0, dtype=np.int64)
        self.vectors = np.empty((0, dim), dtype=np.float32)
        self.alive = np.empty(0, dtype=bool)

    def append(self, ids: np.ndarray, owners: np.ndarray, vectors: np.ndarray) -> None:
        need = self.size + len(ids)
        if need > len(self.ids):
            capacity = max(need, 2 * len(self.ids), 256)
            self.ids = np.resize(self.ids, capacity)
            self.owners = np.resize(self.owners, capacity)
            self.alive = np.resize(self.alive, capacity)
            grown = np.empty((capacity, self.vectors.shape[1]), dtype=np.float32)
            grown[: self.size] = self.vectors[: self.size]
            self.vectors = grown
        end = self.size + len(ids)
        self.ids[self.size : end], self.owners[self.size : end] = ids, owners
        self.vectors[self.size : end], self.alive[self.size : end] = vectors, True
        self.size = end


def arrays_of_rows(rows: list, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, owners, vectors) of database rows (id, owner, float32 vector bytes)."""
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    owners = np.fromiter((row[1] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, owners, vectors


class VectorStore:
    """Vectors by id: a base sorted by id (arrays or a mapped vector file), plus a writer's changes."""

    def __init__(
        self,
        dim: int,
        ids: npt.NDArray[np.int64] | None = None,
        owners: npt.NDArray[np.int64] | None = None,
        vectors: npt.NDArray[np.float32] | None = None,
        owner_index: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None,
        token: str | None = None,
        path: Path | None = None,
    ) -> None:
        self.dim = dim
        self.token = token  # names the vector file the base was read from (None: base only in memory)
        self.path = path  # that file, mapped
        self._ids = np.empty(0, dtype=np.int64) if ids is None else ids
        self._owners = np.empty(0, dtype=np.int64) if owners is None else owners
        self._vectors = np.empty((0, dim), dtype=np.float32) if vectors is None else vectors
        if owner_index is None:  # owners sorted, and the row of each: finding an owner's vector is a binary search
            rows = np.argsort(self._owners, kind="stable")
            owner_index = self._owners[rows], rows
        self._owner_keys, self._owner_rows = owner_index
        self._alive: np.ndarray | None = None  # base rows removed since it was read (None: none)
        self._removed = 0
        self._added = _Growing(dim)
        self._added_row: dict[int, int] = {}
        self._mapping: mmap.mmap | None = None  # the vector file, when the base is read from one
        self._vectors_at = 0

    @classmethod
    def from_arrays(cls, ids, owners, vectors) -> VectorStore:
        """A base held in memory (a reader's rebuild), sorted by id here."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        vectors = check_vectors(np.asarray(vectors)[order], np.asarray(vectors).shape[1])
        store = cls(vectors.shape[1], ids[order], np.asarray(owners, dtype=np.int64)[order], vectors)
        store._check_unique()
        return store

    def _check_unique(self) -> None:
        if len(self._ids) > 1 and not (np.diff(self._ids) > 0).all():
            raise ValueError("vector ids must be unique")

    def __len__(self) -> int:
        return len(self._ids) - self._removed + int(self._added.alive[: self._added.size].sum())

    @property
    def changed(self) -> bool:
        """Whether vectors were added or removed since the base was read."""
        return self._removed > 0 or self._added.size > 0

    # -- changes --------------------------------------------------------------------------
    def add(self, ids: npt.NDArray[np.int64], owners: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add vectors under new ids (an id already present is an error: remove it first)."""
        vectors = check_vectors(vectors, self.dim)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        owners = np.ascontiguousarray(owners, dtype=np.int64)
        if ids.shape != (len(vectors),) or owners.shape != ids.shape:
            raise ValueError(f"ids {ids.shape} and owners {owners.shape} must both be ({len(vectors)},)")
        if len(np.unique(ids)) != len(ids) or self._present(ids).any():
            raise ValueError("vector ids added twice; remove the old vector first")
        start = self._added.size
        self._added.append(ids, owners, vectors)
        self._added_row.update(zip(ids.tolist(), range(start, start + len(ids)), strict=True))

    def remove(self, ids: npt.NDArray[np.int64]) -> int:
        """Remove vectors by id; returns how many were there."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        rows = self._base_rows(ids)
        hit = rows[rows >= 0]
        if len(hit):
            if self._alive is None:
                self._alive = np.ones(len(self._ids), dtype=bool)
            self._alive[hit] = False
            self._removed += len(hit)
        removed = len(hit)
        for vector_id in ids[rows < 0].tolist():
            row = self._added_row.pop(vector_id, None)
            if row is not None:
                self._added.alive[row] = False
                removed += 1
        return removed

    # -- reads ----------------------------------------------------------------------------
    def _base_rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in the base, -1 where it is not there (or removed)."""
        rows = np.searchsorted(self._ids, ids)
        rows = np.minimum(rows, max(len(self._ids) - 1, 0))
        found = (self._ids[rows] == ids) if len(self._ids) else np.zeros(len(ids), dtype=bool)
        if self._alive is not None:
            found &= self._alive[rows]
        return np.where(found, rows, -1)

    def _present(self, ids: np.ndarray) -> np.ndarray:
        return (self._base_rows(ids) >= 0) | np.asarray([i in self._added_row for i in ids.tolist()], dtype=bool)

    def vectors_of(self, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
        """(found [n], vectors [n, d]) of vector ids; rows not found are zeros."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        rows = self._base_rows(ids)
        found = rows >= 0
        if found.any():
            picked = rows[found]
            order = np.argsort(picked)  # ascending rows read a mapped file front to back
            block = np.empty((len(picked), self.dim), dtype=np.float32)
            block[order] = self._vectors[picked[order]]
            out[found] = block
        for i in np.flatnonzero(~found).tolist():
            row = self._added_row.get(int(ids[i]))
            if row is not None:
                out[i], found[i] = self._added.vectors[row], True
        return found, out

    def owners_of(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The owner (image or text row) of each vector id, -1 where the id is not here."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        rows = self._base_rows(ids)
        owners = np.where(rows >= 0, self._owners[np.maximum(rows, 0)] if len(self._ids) else -1, -1)
        for i in np.flatnonzero(rows < 0).tolist():
            row = self._added_row.get(int(ids[i]))
            if row is not None:
                owners[i] = self._added.owners[row]
        return owners.astype(np.int64)

    def ids_of_owners(self, owners: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The vector id of each owner, -1 where it has none here (an owner has at most one vector)."""
        owners = np.asarray(owners, dtype=np.int64).ravel()
        result = np.full(len(owners), -1, dtype=np.int64)
        if len(self._ids):
            at = np.minimum(np.searchsorted(self._owner_keys, owners), len(self._ids) - 1)
            rows = self._owner_rows[at]
            ok = self._owner_keys[at] == owners
            if self._alive is not None:
                ok &= self._alive[rows]
            result[ok] = self._ids[rows[ok]]
        size = self._added.size
        if size and (result < 0).any():
            live = self._added.alive[:size]
            latest = {
                o: i for o, i, a in zip(self._added.owners[:size], self._added.ids[:size], live, strict=True) if a
            }
            for i in np.flatnonzero(result < 0).tolist():
                result[i] = latest.get(int(owners[i]), -1)
        return result

    def ids(self) -> npt.NDArray[np.int64]:
        """Every vector id here, ascending."""
        base = np.asarray(self._ids) if self._alive is None else np.asarray(self._ids)[self._alive]
        size = self._added.size
        added = self._added.ids[:size][self._added.alive[:size]]
        return np.sort(np.concatenate([base, added])) if len(added) else base

    def chunks(self, size: int = _CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ids, owners, vectors) of every vector, in chunks, ascending by id."""
        ids = self.ids()
        for start in range(0, len(ids), size):
            part = ids[start : start + size]
            yield part, self.owners_of(part), self.vectors_of(part)[1]

    def sample(self, count: int, seed: int = 0) -> npt.NDArray[np.float32]:
        """Up to `count` vectors picked at random (training an ANN index)."""
        ids = self.ids()
        if count < len(ids):
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=count, replace=False))
        return self.vectors_of(ids)[1]

    def search(self, queries: npt.NDArray[np.float32], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by inner product: (scores [nq, k], ids [nq, k]), -inf / -1 in empty slots."""
        queries = check_vectors(queries, self.dim, "queries")
        parts_s, parts_i = [], []
        if len(self._ids):
            # removed rows are skipped after the search: ask for enough to still have k
            base_k = min(len(self._ids), k + self._removed)
            scores, rows = faiss.knn(queries, self._vectors, base_k, metric=faiss.METRIC_INNER_PRODUCT)
            ok = rows >= 0
            if self._alive is not None:
                ok &= self._alive[np.maximum(rows, 0)]
            parts_s.append(np.where(ok, scores, -np.inf))
            parts_i.append(np.where(ok, self._ids[np.maximum(rows, 0)], -1))
        size = self._added.size
        if size:
            alive = self._added.alive[:size]
            scores = queries @ self._added.vectors[:size].T
            parts_s.append(np.where(alive[None, :], scores, -np.inf))
            parts_i.append(np.where(alive[None, :], self._added.ids[:size][None, :], -1))
        if not parts_s:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        return top_k(np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1), k)

    # -- files ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, digest: IdDigest, dim: int, token: str) -> VectorStore:
        """Map a vector file, checking it is the one an index file names (token, count, ids, size).

        Raises:
            LibraryError: missing, truncated, foreign or not matching `digest`.
        """
        try:
            with open(path, "rb") as handle:
                head = handle.read(_HEADER.size)
                size = os.fstat(handle.fileno()).st_size
                mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except OSError as error:
            raise LibraryError(f"vector file {path} cannot be read: {error.strerror}") from None
        if len(head) < _HEADER.size or head[:8] != _MAGIC:
            raise LibraryError(f"vector file {path} is not a pixsearch vector file")
        _, count, file_dim, total, mixed, _, raw_token = _HEADER.unpack(head)
        if raw_token.hex() != token or IdDigest(count, total, mixed) != digest or file_dim != dim:
            raise LibraryError(f"vector file {path} is not the one its index names")
        at_ids, at_owners, at_keys, at_rows, at_vectors, expected = _layout(count, dim)
        if size != expected:
            raise LibraryError(f"vector file {path} is {size} bytes, expected {expected} (truncated?)")
        if count == 0:
            return cls(dim, token=token, path=path)
        ids = np.frombuffer(mapping, np.int64, count, at_ids)
        if IdDigest.of(ids) != digest:
            raise LibraryError(f"vector file {path} does not hold the ids its header names")
        owners = np.frombuffer(mapping, np.int64, count, at_owners)
        owner_index = np.frombuffer(mapping, np.int64, count, at_keys), np.frombuffer(mapping, np.int64, count, at_rows)
        vectors = np.frombuffer(mapping, np.float32, count * dim, at_vectors).reshape(count, dim)
        store = cls(dim, ids, owners, vectors, owner_index, token, path)
        store._mapping, store._vectors_at = mapping, at_vectors
        return store

    def read_sparsely(self) -> None:
        """Tell the kernel the mapped vectors will be read a few at a time (an IVF-PQ re-rank): a page
        fault then reads that page from disk, not the 128 KB of read-ahead a scan would want."""
        if self._mapping is not None:
            self._mapping.madvise(mmap.MADV_RANDOM, self._vectors_at, len(self._mapping) - self._vectors_at)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, id) of each row, best first; rows shorter than k padded with -inf / -1."""
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best_s = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    best_i = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    return best_s, np.where(np.isfinite(best_s), best_i, -1)


def write_vector_file(
    path: Path, dim: int, count: int, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], token: bytes
) -> None:
    """Stream `count` (ids ascending, owners, vectors) rows into a vector file at `path`, atomically;
    `token` (16 bytes) is what the index file that goes with it names it by.

    The ids and owners are held in memory (16 bytes a vector), the vectors only a chunk at a time.

    Raises:
        ValueError: the chunks hold another number of rows than `count`, or ids not ascending.
    """
    at_ids, at_owners, at_keys, at_rows, at_vectors, end = _layout(count, dim)
    ids = np.empty(count, dtype=np.int64)
    owners = np.empty(count, dtype=np.int64)

    def write(handle: BinaryIO) -> None:
        done = 0
        handle.seek(at_vectors)
        for chunk_ids, chunk_owners, vectors in chunks:
            if done + len(chunk_ids) > count:
                raise ValueError(f"vector file {path}: more than the {count} rows announced")
            ids[done : done + len(chunk_ids)], owners[done : done + len(chunk_ids)] = chunk_ids, chunk_owners
            handle.write(check_vectors(vectors, dim).tobytes())
            done += len(chunk_ids)
        if done != count:
            raise ValueError(f"vector file {path}: {done} rows written, {count} announced")
        if count > 1 and not (np.diff(ids) > 0).all():
            raise ValueError(f"vector file {path}: ids must be unique and ascending")
        digest = IdDigest.of(ids)
        handle.seek(0)
        handle.write(_HEADER.pack(_MAGIC, count, dim, digest.total, digest.mixed, 0, token))
        rows = np.argsort(owners, kind="stable")
        for offset, array in ((at_ids, ids), (at_owners, owners), (at_keys, owners[rows]), (at_rows, rows)):
            handle.seek(offset)
            handle.write(array.astype(np.int64).tobytes())
        handle.truncate(end)

    write_atomic(path, write)
