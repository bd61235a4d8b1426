"""Exact against IVF-PQ search at library scale, and the whole query path on a library of that size.

--n unit vectors of dimension 512 clustered like real image embeddings (tests/clustered.py), and
separate query sets: text-like (from the other side of the modality gap, cosine ~0.3 to their
best photos) and photo-like. They are written into a real library (SQLite rows, bulk inserts) and
indexed through `Library.rebuild_index`. For the exact index and for IVF-PQ it prints: build time,
memory per vector in a fresh reader process (anonymous and file-backed resident memory after
loading and after the queries), recall@10 against exact search and single-query latency
p50/p99, with ratios against exact search measured in the same run; then an nprobe / re-rank
sweep, and `hybrid_search` (relevance cut-off, keywords, grouping, SQL rows) against text
encoding + ANN search alone, with a CLIP ViT-B/32 text tower (random weights).

    python bench/ann.py                    # 1,000,000 vectors (~4.6 GB of SQLite and 2.1 GB of vectors in a temp folder)
    python bench/ann.py --n 100000         # or --quick (20,000)
    python bench/ann.py --threshold-scan   # exact against IVF-PQ latency at several sizes, no library
    python bench/ann.py --whole-path DIR   # only hybrid_search against encode + ANN, on a library --keep kept
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import faiss
import numpy as np
from common import Timer, percentile, save_vit_b32_clip

# isort: split
from clustered import clustered, image_queries, text_queries  # tests/, on the path once common is imported
from synthetic_library import build_index, build_library

from pixsearch.storage import IMAGES
from pixsearch.storage.ann import IndexChoice
from pixsearch.storage.vector_index import VectorIndex

WORDS = (
    "a dog on the beach", "red car in the city", "birthday party", "snow on a mountain", "sunset over the lake",
    "kitchen table", "a cat asleep", "street at night", "wedding dance", "boats in the harbour",
)  # fmt: skip
K = 10
THREADS = faiss.omp_get_max_threads()


def exact_truth(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row numbers of the exact top-k (ids are row + 1 in the library)."""
    faiss.omp_set_num_threads(THREADS)  # the truth on every core; the timings on one
    _, rows = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(1)
    return rows + 1


def recall(index: VectorIndex, queries: np.ndarray, truth: np.ndarray) -> float:
    _, ids = index.search(queries, K)
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids.tolist(), truth.tolist(), strict=True)]))


def latencies(index: VectorIndex, queries: np.ndarray) -> tuple[float, float]:
    """p50 and p99 of single-query searches, in seconds (after one warm-up query)."""
    index.search(queries[:1], K)
    times = []
    for query in queries:
        with Timer() as timer:
            index.search(query[None, :], K)
        times.append(timer.seconds)
    return percentile(times, 50), percentile(times, 99)


def reader_memory(library_root: Path, queries: Path) -> dict[str, float]:
    """Resident memory of a fresh process that opens the library's index as a reader and runs `queries`."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-memory", str(library_root), str(queries)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"RssAnon", "RssFile"}:
            fields[name] = int(value.split()[0]) * 1024
    return fields


def cli_memory(library_root: Path) -> str:
    """Resident memory at the end of a `pixsearch search` run on the library (the whole CLI: torch, the
    text tower, the index), in MB."""
    code = (
        "import io, sys, contextlib; from pixsearch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['search', 'a dog on the beach', '--library', {str(library_root)!r}, '--json', '--no-rerank'])\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "print(' '.join(f\"{k} {int(status[k].split()[0]) // 1024} MB\" for k in ('VmHWM', 'RssAnon', 'RssFile')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def child_memory(library_root: Path, queries_path: Path) -> None:
    from pixsearch.storage import Library

    faiss.omp_set_num_threads(1)
    queries = np.load(queries_path)
    library = Library.open(library_root)
    with library.session() as session:
        model = library.active_model(session)
    before = _rss()
    index = library.load_index(IMAGES, model, persist=False)
    loaded = _rss()
    for query in queries:
        index.search(query[None, :], K)
    after = _rss()
    result = {f"{name}_{stage}": (value[name] - before[name]) / len(index) for stage, value in
              (("load", loaded), ("queries", after)) for name in ("RssAnon", "RssFile")}  # fmt: skip
    print(json.dumps({**result, "kind": index.kind, "count": len(index), "queries": len(queries)}))


def row(name: str, build: float, memory: dict, recalls: tuple[float, float], p50: float, p99: float, exact=None):
    """One index type's figures; with `exact` (the exact row's), each beside its ratio to exact search."""
    private, mapped = memory["RssAnon_queries"], memory["RssFile_queries"]
    figures = {"build": build, "private": private, "mapped": mapped, "resident": private + mapped, "p50": p50}

    def ratio(key: str) -> str:
        return f" ({figures[key] / exact[key]:.3g}x)" if exact and exact[key] else ""

    print(
        f"{name:<6} build {build:6.1f}s{ratio('build')}  resident/vector {private + mapped:5.0f} B{ratio('resident')}: "
        f"private {private:4.0f} B, mapped file {mapped:5.0f} B{ratio('mapped')} after {memory['queries']} queries  "
        f"recall@10 text {recalls[0]:.3f} photo {recalls[1]:.3f}  p50 {p50 * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms"
        + (f"  {exact['p50'] / p50:.1f}x the speed of exact search" if exact else ""),
        flush=True,
    )
    return figures


def sweep(index: VectorIndex, text_q: np.ndarray, text_truth: np.ndarray, exact_p50: float) -> None:
    print("IVF-PQ tuning (text-like queries): nprobe x re-rank depth -> recall@10, p50, speed against exact")
    base = index.params
    for nprobe in sorted({max(4, base.nprobe // 2), base.nprobe, base.nprobe * 2}):
        for depth in (100, 200, 400, 800):
            index.fit(IndexChoice(kind="ivfpq", nprobe=nprobe, rerank=depth))
            p50, _ = latencies(index, text_q[:50])
            print(f"  nprobe {nprobe:4d} rerank {depth:4d}: recall {recall(index, text_q, text_truth):.3f}  "
                  f"p50 {p50 * 1e3:6.2f} ms  {exact_p50 / p50:6.1f}x")  # fmt: skip
    index.fit(IndexChoice(kind="ivfpq", nprobe=base.nprobe, rerank=base.rerank))


def whole_path(library, count: int) -> None:
    """hybrid_search p50 against (text encoding + ANN search) p50, both measured here."""
    from pixsearch.search import SearchService
    from pixsearch.search.engine import SearchOptions, hybrid_search

    service = SearchService(library)
    # a z_min no photo misses: the cut-off is computed for every candidate, and every stage after it runs
    options = SearchOptions(cutoff_z=-1e9, model_calibration=False)
    hybrid_search(service, "warm up", options=options)
    bare, whole, kept = [], [], []
    for words in WORDS * 3:
        with Timer() as timer:
            service.index(IMAGES).search(service.encode_text([words]), K)
        bare.append(timer.seconds)
        with Timer() as timer:
            result = hybrid_search(service, words, k=K, options=options)
        whole.append(timer.seconds)
        kept.append(result.total)
    ratio = percentile(whole, 50) / percentile(bare, 50)
    print(
        f"whole query path on {count} photos: hybrid_search p50 {percentile(whole, 50) * 1e3:.1f} ms "
        f"(p99 {percentile(whole, 99) * 1e3:.1f}) against text encode + ANN search p50 "
        f"{percentile(bare, 50) * 1e3:.1f} ms: {ratio:.2f}x (goal <= 2x); {np.mean(kept):.0f} results a query"
    )


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="pixsearch-ann-", dir=args.workdir))
    try:
        _run(args, work)
    finally:
        if args.keep:
            print(f"library kept in {work / 'library'}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, work: Path) -> None:
    import torch

    from pixsearch.models import create

    faiss.omp_set_num_threads(1)  # every timing on one core
    torch.set_num_threads(1)
    with Timer() as timer:
        data = clustered(args.n, 512, seed=0)
        text_q, image_q = text_queries(data, args.queries), image_queries(data, args.queries)
        text_truth, image_truth = exact_truth(data.vectors, text_q), exact_truth(data.vectors, image_q)
    print(f"{args.n} vectors x 512 in {len(data.centres)} clusters, {args.queries} text-like and "
          f"{args.queries} photo-like queries ({timer.seconds:.0f}s to make, with the exact truth)", flush=True)  # fmt: skip
    np.save(work / "queries.npy", text_q[:100])  # for the readers' memory; the exact one runs 10 (each maps it all)
    np.save(work / "exact-queries.npy", text_q[:10])
    spec = f"clip:{save_vit_b32_clip(work / 'clip')}"
    encoder = create(spec)
    with Timer() as timer:
        library = build_library(work / "library", data.vectors, spec, encoder.preprocess_id)
    del data
    print(f"library of {args.n} photos written in {timer.seconds:.0f}s", flush=True)
    with library.session() as session:
        model = library.active_model(session)

    with Timer() as flat_build:
        build_index(library, "flat")
    flat = library.load_index(IMAGES, model, persist=False)
    exact_p50, exact_p99 = latencies(flat, text_q[: args.exact_queries])
    flat_memory = reader_memory(library.root, work / "exact-queries.npy")
    recalls = recall(flat, text_q, text_truth), recall(flat, image_q, image_truth)
    exact = row("exact", flat_build.seconds, flat_memory, recalls, exact_p50, exact_p99)
    print(f"  pixsearch search on the exact index: {cli_memory(library.root)} at its end", flush=True)
    del flat

    with library.writing("bench"):
        with library.session() as session:
            library.set_index_choice(session, IndexChoice.parse(args.ivfpq))
            choice = library.index_choice(session)
        index = library.load_index(IMAGES, model)  # the flat file: its vectors, mapped
        with Timer() as build:
            index.fit(choice)
        library.save_index(IMAGES, model.key, index)
    ann = library.load_index(IMAGES, model, persist=False)
    print(f"IVF-PQ: {ann.describe()}")
    p50, p99 = latencies(ann, text_q)
    memory = reader_memory(library.root, work / "queries.npy")
    recalls = recall(ann, text_q, text_truth), recall(ann, image_q, image_truth)
    row("ivfpq", build.seconds, memory, recalls, p50, p99, exact)
    print(f"  pixsearch search on the IVF-PQ index: {cli_memory(library.root)} at its end", flush=True)
    if not args.quick:
        sweep(ann, text_q, text_truth, exact_p50)
    whole_path(library, args.n)
    library.close()


def threshold_scan(args: argparse.Namespace) -> None:
    """Single-query latency of exact and IVF-PQ search, and the IVF-PQ build time, at several sizes,
    beside the time to encode one text query (CLIP ViT-B/32 text tower, one thread)."""
    import torch

    from pixsearch.models import create

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pixsearch-scan-", dir=args.workdir) as work:
        encoder = create(f"clip:{save_vit_b32_clip(Path(work) / 'clip')}")
        encoder.encode_texts(["warm up"])
        times = []
        for words in WORDS:
            with Timer() as timer:
                encoder.encode_texts([words])
            times.append(timer.seconds)
    encode = percentile(times, 50)
    print(f"text encoding p50 {encode * 1e3:.1f} ms (one thread)")
    print("n        exact p50 (x encode)   ivfpq p50  speed-up  recall@10(text)  ivfpq build")
    for n in args.sizes:
        data = clustered(n, 512, seed=0)
        queries = text_queries(data, 100)
        truth = exact_truth(data.vectors, queries)
        index = VectorIndex(512)
        index.add(np.arange(1, n + 1), data.vectors, np.arange(1, n + 1))
        exact, _ = latencies(index, queries[:50])
        with Timer() as build:
            index.fit(IndexChoice(kind="ivfpq"))
        approx, _ = latencies(index, queries)
        print(f"{n:<8} {exact * 1e3:8.2f} ms ({exact / encode:4.2f}x) {approx * 1e3:8.2f} ms {exact / approx:8.1f}x  "
              f"{recall(index, queries, truth):15.3f}  {build.seconds:9.1f}s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors (photos) in the library")
    parser.add_argument("--quick", action="store_true", help="20,000 vectors, 50 queries, no tuning sweep")
    parser.add_argument("--queries", type=int, default=200, help="queries of each kind (recall, IVF-PQ latency)")
    parser.add_argument("--exact-queries", type=int, default=30, help="single queries timed on the exact index")
    parser.add_argument("--ivfpq", default="ivfpq", help="the IVF-PQ choice, e.g. ivfpq:nprobe=48,rerank=400")
    parser.add_argument("--workdir", help="where the temp library goes (default: the system temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the library (e.g. for bench/serve_load.py)")
    parser.add_argument("--threshold-scan", action="store_true", help="exact against IVF-PQ at --sizes, no library")
    parser.add_argument(
        "--sizes", type=lambda s: [int(n) for n in s.split(",")], default=[10_000, 30_000, 50_000, 100_000, 300_000]
    )
    parser.add_argument("--whole-path", metavar="LIBRARY", help="only the whole query path, on a library --keep kept")
    parser.add_argument("--child-memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child_memory:
        child_memory(Path(args.child_memory[0]), Path(args.child_memory[1]))
        return
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threshold_scan:
        threshold_scan(args)
        return
    if args.whole_path:
        import torch

        from pixsearch.storage import Library

        faiss.omp_set_num_threads(1)  # every timing on one core, as in a whole run
        torch.set_num_threads(1)
        library = Library.open(Path(args.whole_path))
        with library.session() as session:
            model = library.active_model(session)
            count = library.count_vectors(session, IMAGES, model.key)
        whole_path(library, count)
        library.close()
        return
    if args.quick:
        args.n, args.queries = 20_000, 50
    run(args)


if __name__ == "__main__":
    main()
