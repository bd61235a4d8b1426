"""Which index a library gets, and the approximate (IVF-PQ) one.

Below `FLAT_UP_TO` vectors the index is exact: the vectors themselves, searched by brute force.
Above it, an IVF-PQ index: the vectors are split into `nlist` cells by spherical k-means, and each
is held as a product-quantisation code of `m` 4-bit parts (FAISS's "fast-scan" layout, scanned with
SIMD shuffles); a query scans the codes of its `nprobe` nearest cells and its best `rerank`
candidates are re-scored exactly against the full vectors (memory-mapped, see
`pixsearch.storage.vector_file`). The codes are what stays in memory: 128 bytes a vector at d=512
(m=256: two dimensions a 4-bit part) instead of 2,048 for 512 float32s.

The defaults were tuned with `bench/ann.py` on a million clustered vectors with text-like queries,
which sit further from the photos than photos do from each other (the modality gap): ranking cells
by the query's similarity to their centroid misses cells holding true neighbours that photo queries
find. Small cells are what fixes it: at a million vectors, 1,024 cells (~sqrt(n)) held 0.968 of the
text-like queries' true top-10 in the 128 best-ranked cells (22% of the vectors, as the favoured cells
are the big ones), 4,096 cells (~4 sqrt(n)) held 0.990 in the best 5% of the vectors; a quarter of
the scan then gives a better recall@10 (0.980 at 128 of 4,096 cells against 0.961 at 128 of 1,024,
both re-ranking 400; in 1,000 clusters instead of the test set's 3,333, 0.986 against 0.983 in less
than half the time). Fewer bytes a code did not pay: 4-bit parts of 4 or 8 dimensions (m=128, m=64)
scanned little faster and lost recall that no re-rank depth won back (0.922 and 0.679 at 128 of 1,024
cells, re-rank 1,000, against 0.966 with m=256).

A choice is written `auto`, `flat` or `ivfpq`, optionally with parameters:
`ivfpq:nlist=1024,m=128,nprobe=64,rerank=200`, `auto:threshold=50000`.
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
MIN_TRAIN = 1000  # fewer vectors than this are searched exactly whatever the choice: too few to train cells on
GROWTH_RETRAIN = 4  # an IVF index trained at n vectors is retrained once the library holds 4n
_TRAIN_PER_CELL = 40  # k-means wants ~40 training points per cell (faiss warns under 39)
_KMEANS_ITERATIONS = 10


@dataclass(frozen=True)
class IvfPqParams:
    """The parameters of an IVF-PQ index (`trained_on`: how many vectors it was trained at)."""

    nlist: int
    m: int
    nbits: int = 4  # fast-scan codes are 4-bit parts
    nprobe: int = 16
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
        # a 32nd of the cells: text-like queries at 1M (4,096 cells) reach recall@10 0.98 there (bench/ann.py)
        nprobe = self.nprobe or min(nlist, max(16, nlist // 32))
        return IvfPqParams(nlist, m, 4, nprobe, self.rerank or 400, count)

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
    """~4 sqrt(n) cells (a power of two: 4,096 at a million), so a cell holds ~sqrt(n) / 4 vectors; never
    fewer than 40 vectors a cell. Small cells follow the photos' own clusters closely enough that a text
    query's neighbours sit in the cells it ranks first (see the module's docstring)."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(count, 1)), 1)))
    return int(max(1, min(nlist, 65536, count // _TRAIN_PER_CELL)))


def default_m(dim: int) -> int:
    """4-bit parts per code: one per two dimensions (128 bytes a vector at d=512)."""
    return dim // 2 if dim % 2 == 0 else dim


class Gpu:
    """The first CUDA device, through the GPU build of FAISS (the `gpu` extra), when both are there.

    It runs what costs most in building an IVF-PQ index: k-means for the cells and assigning every
    vector to its cell. Searching stays on the CPU: FAISS has no GPU version of the fast-scan codes,
    and a query's scan takes milliseconds there.
    """

    def __init__(self, resources) -> None:
        self.resources = resources

    @classmethod
    def find(cls) -> Gpu | None:
        if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
            return cls(faiss.StandardGpuResources())
        return None

    def flat(self, centroids: faiss.IndexFlatIP) -> faiss.Index:
        """A copy on the GPU of a flat inner-product index (the cells' centroids)."""
        return faiss.index_cpu_to_gpu(self.resources, 0, centroids)


class IvfPq:
    """An IVF-PQ index over vector ids; `candidates` gives the ids to re-score exactly."""

    def __init__(self, params: IvfPqParams, index: faiss.IndexIVFPQFastScan, gpu: Gpu | None = None) -> None:
        self.params = params
        self.index = index
        self._gpu = gpu
        self.stale = 0  # codes of removed vectors still in the lists (see `remove`)

    @classmethod
    def train(cls, params: IvfPqParams, sample: npt.NDArray[np.float32], gpu: Gpu | None = None) -> IvfPq:
        """An empty index trained on `sample`: spherical k-means for the cells (unit centroids, so a
        vector's cell is its nearest by angle, not the longest centroid), then the codes."""
        dim = sample.shape[1]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQFastScan(
            quantizer, dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = _KMEANS_ITERATIONS  # the exact re-rank makes up for rougher cells and codes
        index.cp.spherical = True
        index.pq.cp.niter = _KMEANS_ITERATIONS
        clustering = faiss.Clustering(dim, params.nlist, index.cp)
        assign = _on_gpu(gpu, quantizer)
        clustering.train(sample, assign)  # the cells first, on every core (or the GPU): large products
        if assign is not quantizer:
            quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(params.nlist, dim))
        # then the codes, whose m small k-means runs are quicker on one thread: OpenMP's barriers cost
        # more than their work (4,000 points into 64 centroids: 25 ms on one thread, 550 ms on two busy cores)
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
        """Whether a GPU trains it and assigns the cells of bulk additions."""
        return self._gpu is not None

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if not len(ids):
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        cpu = self.index.quantizer
        assign = _on_gpu(self._gpu, cpu) if len(ids) >= 10_000 else cpu  # a bulk add finds cells on the GPU
        if assign is cpu:
            self.index.add_with_ids(vectors, ids)
            return
        self.index.quantizer = assign
        try:
            self.index.add_with_ids(vectors, ids)
        finally:
            self.index.quantizer = cpu

    def forget(self, count: int) -> None:
        """`count` vectors were removed. Their codes stay until `refill` (FAISS 1.15 misplaces the codes
        of vectors added to a fast-scan list after a removal from it); the caller re-scores candidates
        against its own vectors, where a removed id is not found and drops out."""
        self.stale += count

    def refill(self, chunks) -> None:
        """Drop every code and encode `chunks` of (ids, vectors) again (the cells and codebooks stay)."""
        self.index.reset()
        for ids, vectors in chunks:
            self.add(ids, vectors)
        self.stale = 0

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
        _, ids = self.index.search(queries, depth, params=faiss.SearchParametersIVF(nprobe=nprobe))
        return ids.astype(np.int64)

    def write(self, handle: BinaryIO) -> None:
        faiss.write_index(self.index, faiss.PyCallbackIOWriter(handle.write))

    @classmethod
    def read(cls, handle: BinaryIO, params: IvfPqParams, gpu: Gpu | None = None) -> IvfPq:
        index = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
        if not isinstance(index, faiss.IndexIVFPQFastScan):
            index = faiss.downcast_index(index)
        return cls(replace(params), index, gpu)

    def resident_bytes(self) -> int:
        """Memory the index holds: codes and ids of every vector, cell centroids, PQ tables."""
        codes = len(self) * (self.params.m * self.params.nbits // 8 + 8)
        return codes + self.params.nlist * self.index.d * 4 + self.index.pq.centroids.size() * 4


def _on_gpu(gpu: Gpu | None, centroids: faiss.IndexFlatIP) -> faiss.Index:
    """The centroids' index on the GPU when there is one (and it takes it), else `centroids` itself."""
    if gpu is None:
        return centroids
    try:
        return gpu.flat(centroids)
    except RuntimeError as error:
        log.warning("the GPU did not take the cells' centroids (%s): on the CPU", error)
        return centroids
