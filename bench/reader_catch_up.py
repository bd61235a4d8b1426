"""What a reader pays to open a library whose index file lags behind the database, as it does while a
writer indexes (the writer commits every batch but writes the index file every few minutes):
bringing the file's index up to date in memory (`pixsearch.storage.catch_up`) against rebuilding it
from the stored vectors (what a reader did before: read every vector from SQL, and above the ANN
threshold train the index again), both in the same run.

    python bench/reader_catch_up.py                 # 200,000 vectors, 2,000 added and 100 photos removed
    python bench/reader_catch_up.py --n 1000000 --added 5000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from common import Timer  # noqa: F401  (puts tests/ on the path)

# isort: split
from clustered import clustered
from synthetic_library import build_index, build_library

from pixsearch.indexer import writer
from pixsearch.indexer.decode import Prepared
from pixsearch.storage import IMAGES, Library

DIM = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--added", type=int, default=2_000)
    parser.add_argument("--removed", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()}")
    data = clustered(args.n + args.added, DIM, seed=3).vectors
    with tempfile.TemporaryDirectory(prefix="pixsearch-catch-up-") as temp:
        root = Path(temp) / "library"
        started = time.perf_counter()
        library = build_library(root, data[: args.n], "clip:bench", "bench")
        build_index(library, "auto")
        print(f"library of {args.n} vectors and its index file: {time.perf_counter() - started:.0f} s")
        with library.session() as session:
            model = library.active_model(session)
        with library.writing("bench"):  # a writer mid-run: batches committed, the index file not yet written
            index = library.load_index(IMAGES, model)
            for start in range(args.n, args.n + args.added, 500):
                part = data[start : min(start + 500, args.n + args.added)]
                items = [
                    Prepared(f"/new/{start + i}.jpg", f"{start + i:064x}", 1, 0.0, 64, 48, None, None, None)
                    for i in range(len(part))
                ]
                with library.session() as session:
                    writer.store_embedded(session, items, part, model.key, index)
                    index.generation = library.bump_generation(session, IMAGES, model.key)
            added = _reader_time(root, model, library)
            with library.session() as session:
                writer.delete_images(session, list(range(1, args.removed + 1)), index)
                index.generation = library.bump_generation(session, IMAGES, model.key)
            both = _reader_time(root, model, library)
            start = time.perf_counter()
            rebuilt = Library.open(root).rebuild_index(IMAGES, model, persist=False)
            rebuild = time.perf_counter() - start
            assert rebuilt.digest() == _digest(library, model)
        print(f"a reader opening the index file while it lags behind the database ({rebuilt.describe()}):")
        print(f"  {args.added} vectors added since the file: caught up in memory in {added:.2f} s")
        print(f"  and {args.removed} photos removed too: caught up in {both:.2f} s")
        print(f"  rebuilt from the stored vectors (what a reader did before): {rebuild:.2f} s")
        print(f"  catching up is {rebuild / added:.1f}x / {rebuild / both:.1f}x faster")


def _digest(library: Library, model):
    with library.session() as session:
        return library.vector_digest(session, IMAGES, model.key)


def _reader_time(root: Path, model, library: Library) -> float:
    """Seconds a fresh reader takes to open the image index; checks it caught up rather than rebuilt."""
    start = time.perf_counter()
    index = Library.open(root).load_index(IMAGES, model, persist=False)
    seconds = time.perf_counter() - start
    assert index.mapped_file is not None, "the reader rebuilt instead of catching up"
    assert index.digest() == _digest(library, model), "the reader's index is not the database's"
    return seconds


if __name__ == "__main__":
    main()
