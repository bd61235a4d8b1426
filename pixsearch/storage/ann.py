"""Which index a library gets, and the approximate (IVF-PQ) one.

Below `FLAT_UP_TO` vectors the index is exact: the vectors themselves, searched by brute force.
Above it, an IVF-PQ index: the vectors are split into `nlist` cells by k-means, and each is held
as an `m`-byte product-quantisation code; a query scans the codes of its `nprobe` nearest cells and
its best `rerank` candidates are re-scored exactly against the full vectors (memory-mapped, see
`pixsearch.storage.vector_file`). The codes are what stays in memory: ~72 bytes a vector at m=64
instead of 2,048 for 512 float32s. The numbers come from `bench/ann.py` (see the README's "How
pixsearch scales"); the defaults were tuned with text-like queries, which sit further from the
photos than photos do from each other (the modality gap), and need more cells probed.

A choice is written `auto`, `flat` or `ivfpq`, optionally with parameters:
`ivfpq:nlist=1024,m=64,nprobe=32,rerank=400`, `auto:threshold=50000`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import BinaryIO

import faiss
import numpy as np
import numpy.typing as npt

from pixsearch.errors import ConfigError

log = logging.getLogger(__name__)

FLAT, IVFPQ, AUTO = "flat", "ivfpq", "auto"
KINDS = (AUTO, FLAT, IVFPQ)
# exact search costs about half a text query's encoding at 50k vectors (bench/ann.py --threshold-scan:
# 0.18x at 10k, 0.32x at 30k, 0.91x at 100k, 3x at 300k); past that the index would dominate a query
FLAT_UP_TO = 50_000
MIN_TRAIN = 256  # fewer vectors than this are searched exactly whatever the choice: too few to train cells on
GROWTH_RETRAIN = 4  # an IVF index trained at n vectors is retrained once the library holds 4n
_TRAIN_PER_CELL = 40  # k-means wants ~40 training points per cell (faiss warns under 39)
_KMEANS_ITERATIONS = 10


@dataclass(frozen=True)
class IvfPqParams:
    """The parameters of an IVF-PQ index (`trained_on`: how many vectors it was trained at)."""

    nlist: int
    m: int
    nbits: int = 8
    nprobe: int = 32
    rerank: int = 400
    trained_on: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class IndexChoice:
    """What index a library wants: a kind (`auto` picks by size) and optional IVF-PQ parameters."""

    kind: str = AUTO
    threshold: int = FLAT_UP_TO
    nlist: int | None = None
    m: int | None = None
    nprobe: int | None = None
    rerank: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"index type must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("threshold", "nlist", "m", "nprobe", "rerank"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"index parameter {name} must be at least 1, got {value}")

    @classmethod
    def parse(cls, text: str) -> IndexChoice:
        """`kind[:name=value,...]`, e.g. `ivfpq:nlist=1024,nprobe=48`.

        Raises:
            ConfigError: an unknown kind or parameter, or a value that is not a positive integer.
        """
        kind, _, rest = text.strip().lower().partition(":")
        known = {f.name for f in fields(cls)} - {"kind"}
        values: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            name, _, raw = part.partition("=")
            if name not in known:
                raise ConfigError(
                    f"index type {text!r}: unknown parameter {name!r} (known: {', '.join(sorted(known))})"
                )
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigError(f"index type {text!r}: {name} must be an integer, got {raw!r}") from None
        return cls(kind or AUTO, **values)

    def __str__(self) -> str:
        defaults = IndexChoice()
        extra = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)[1:]
            if getattr(self, f.name) != getattr(defaults, f.name)
        ]
        return self.kind + (":" + ",".join(extra) if extra else "")

    def kind_for(self, count: int, current: str | None = None) -> str:
        """flat or ivfpq for `count` vectors; `auto` goes back to flat only well below the threshold
        (at half of it), so a library hovering at the threshold is not rebuilt back and forth."""
        if count < MIN_TRAIN:
            return FLAT
        if self.kind != AUTO:
            return self.kind
        if current == IVFPQ:
            return IVFPQ if count >= self.threshold // 2 else FLAT
        return IVFPQ if count >= self.threshold else FLAT

    def ivfpq_params(self, count: int, dim: int) -> IvfPqParams:
        """IVF-PQ parameters for `count` vectors of `dim`: the choice's own where given, else by size."""
        nlist = self.nlist or default_nlist(count)
        m = self.m or default_m(dim)
        if dim % m:
            raise ConfigError(f"index parameter m={m} must divide the vectors' dimension {dim}")
        # 2**nbits centroids per sub-quantizer need ~40 training points each
        nbits = int(min(8, max(4, math.floor(math.log2(max(count, 16) / _TRAIN_PER_CELL)))))
        # 1/16 of the cells: text-like queries need that for recall@10 >= 0.97 (bench/ann.py); photo-like need less
        nprobe = self.nprobe or min(nlist, max(16, nlist // 16))
        return IvfPqParams(nlist, m, nbits, nprobe, self.rerank or 400, count)

    def needs_rebuild(self, current: str, params: IvfPqParams | None, count: int) -> bool:
        """Whether an index of kind `current` (with `params`) should be rebuilt now that it holds `count`."""
        wanted = self.kind_for(count, current)
        if wanted != current:
            return True
        if wanted == FLAT or params is None:
            return False
        if count >= GROWTH_RETRAIN * max(params.trained_on, 1):
            return True
        return any(getattr(self, name) not in (None, getattr(params, name)) for name in ("nlist", "m"))

    def search_params(self, params: IvfPqParams) -> IvfPqParams:
        """`params` with the choice's nprobe and rerank depth, where it gives them (no retraining needed)."""
        return replace(params, nprobe=self.nprobe or params.nprobe, rerank=self.rerank or params.rerank)


def default_nlist(count: int) -> int:
    """~sqrt(n) cells (a power of two), so a cell holds ~sqrt(n) vectors; never fewer than 40 vectors a cell."""
    nlist = 2 ** round(math.log2(max(math.sqrt(max(count, 1)), 1)))
    return int(max(1, min(nlist, 65536, count // _TRAIN_PER_CELL)))


def default_m(dim: int) -> int:
    """Bytes per code: 64 (8 dimensions a byte at d=512), or the largest divisor of `dim` up to 64
    that leaves at least 2 dimensions to a sub-quantizer."""
    return max(m for m in range(1, 65) if dim % m == 0 and dim // m >= 2)


class Gpu:
    """The first CUDA device, through the GPU build of FAISS (the `gpu` extra), when both are there."""

    MAX_K = 2048  # FAISS on the GPU answers at most this many neighbours, and probes at most this many cells

    def __init__(self, resources) -> None:
        self.resources = resources

    @classmethod
    def find(cls) -> Gpu | None:
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            return cls(faiss.StandardGpuResources())
        return None

    def clone(self, index: faiss.Index) -> faiss.Index:
        options = faiss.GpuClonerOptions()
        options.useFloat16 = True  # m=64 lookup tables (64 KB in float32) do not fit a block's shared memory
        return faiss.index_cpu_to_gpu(self.resources, 0, index, options)


class IvfPq:
    """An IVF-PQ index over vector ids; `candidates` gives the ids to re-score exactly. Trained and
    searched on the GPU when there is one (`Gpu`); kept and saved on the CPU."""

    def __init__(self, params: IvfPqParams, index: faiss.IndexIVFPQ, gpu: Gpu | None = None) -> None:
        self.params = params
        self.index = index
        self._gpu = gpu
        self._gpu_copy = None  # a clone on the GPU for searching, dropped whenever the index changes

    @classmethod
    def train(cls, params: IvfPqParams, sample: npt.NDArray[np.float32], gpu: Gpu | None = None) -> IvfPq:
        """An empty index trained on `sample` (k-means for the cells, then the product quantizer)."""
        dim = sample.shape[1]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = _KMEANS_ITERATIONS  # the exact re-rank makes up for rougher cells and codes
        index.pq.cp.niter = _KMEANS_ITERATIONS
        if gpu is not None:
            try:
                trained = gpu.clone(index)
                trained.train(sample)
                return cls(params, faiss.index_gpu_to_cpu(trained), gpu)
            except RuntimeError as error:  # a layout the GPU build does not support: train on the CPU
                log.warning("training the IVF-PQ index on the GPU failed (%s); training on the CPU", error)
        # the cells first, on every core (large matrix products); then the product quantizer, whose
        # m small k-means runs are quicker on one thread: OpenMP's barriers cost more than their work
        # (4,000 points into 64 centroids: 25 ms on one thread, 550 ms on two busy cores)
        faiss.Clustering(dim, params.nlist, index.cp).train(sample, quantizer)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.train(sample)  # the quantizer is trained already: this trains the codes on the residuals
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(params, index, gpu)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on the GPU."""
        return self._gpu is not None

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids):
            self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
            self._gpu_copy = None

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        if len(ids):
            self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
            self._gpu_copy = None

    def ids(self) -> npt.NDArray[np.int64]:
        lists = self.index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(cell), size).copy()
            for cell in range(self.index.nlist)
            if (size := lists.list_size(cell))
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)

    def candidates(self, queries: npt.NDArray[np.float32], depth: int) -> npt.NDArray[np.int64]:
        """Ids of the `depth` best vectors by their codes, for each query (-1 in empty slots)."""
        total = max(len(self), 1)
        depth = max(1, min(depth, total))
        # probe enough cells to hold `depth` candidates several times over, when more are asked for
        wanted = math.ceil(4 * depth * self.params.nlist / total)
        nprobe = int(min(self.params.nlist, max(self.params.nprobe, wanted)))
        searcher = self._searcher() if max(depth, nprobe) <= Gpu.MAX_K else None
        if searcher is None:
            _, ids = self.index.search(queries, depth, params=faiss.SearchParametersIVF(nprobe=nprobe))
        else:  # a GPU index takes nprobe as a setting
            searcher.nprobe = nprobe
            _, ids = searcher.search(queries, depth)
        return ids.astype(np.int64)

    def _searcher(self) -> faiss.Index | None:
        """The index's clone on the GPU (made after each change), None without one."""
        if self._gpu is not None and self._gpu_copy is None:
            try:
                self._gpu_copy = self._gpu.clone(self.index)
            except RuntimeError as error:
                log.warning("the IVF-PQ index does not fit the GPU (%s); searching on the CPU", error)
                self._gpu = None
        return self._gpu_copy

    def write(self, handle: BinaryIO) -> None:
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(handle.write))

    @classmethod
    def read(cls, handle: BinaryIO, params: IvfPqParams, gpu: Gpu | None = None) -> IvfPq:
        index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
        if not isinstance(index, faiss.IndexIVFPQ):
            index = faiss.downcast_index(index)
        return cls(replace(params), index, gpu)

    def resident_bytes(self) -> int:
        """Memory the index holds: codes and ids of every vector, cell centroids, PQ tables."""
        codes = len(self) * (self.index.code_size + 8)
        return codes + self.params.nlist * self.index.d * 4 + self.index.pq.centroids.size() * 4
