"""Deduplication of /knn-service hits (clip-retrieval's connected components above 0.94): pixsearch's
`first_of_each_group` against clip-retrieval's own code (faiss range search, then components in Python,
taken from the installed clip-retrieval package) on the same vectors, measured in the same run.

Two kinds of hit lists: "bursts" (most photos distinct, some in small groups of near-copies, as a real
library) and "alike" (every vector near every other, as with a weak model: every pair is a link).
Both must keep the same rows; the time ratio is clip-retrieval's over pixsearch's.

    python bench/knn_dedup.py [--dim 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
from cli_help import cpu_model
from clip_retrieval_code import knn_service_dedup
from common import Timer, statistics

from pixsearch.web.knn_query import first_of_each_group

CASES = (("bursts", 3000), ("bursts", 10000), ("alike", 3000), ("alike", 10000))
REFERENCE_MAX_LINKS = 20_000_000  # clip-retrieval's range search holds every link in memory


def vectors(kind: str, count: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "bursts":  # a third of the photos in groups of 2 to 5 near-copies
        base = rng.normal(size=(count, dim))
        for start in range(0, count // 3, 5):
            size = int(rng.integers(2, 6))
            base[start : start + size] = base[start] + rng.normal(scale=0.15, size=(min(size, count - start), dim))
    else:
        base = rng.normal(size=(1, dim)) * 8 + rng.normal(size=(count, dim))
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    return unit[rng.permutation(count)].astype(np.float32)


def median_seconds(function, data: np.ndarray, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        with Timer() as timer:
            result = function(data)
        times.append(timer.seconds)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reference = knn_service_dedup()
    print(f"{cpu_model()}, Python {platform.python_version()}, dim {args.dim}, median of {args.repeat}")
    if reference is None:
        print("clip-retrieval is not installed (pip install --no-deps clip-retrieval): pixsearch's times only")
    for kind, count in CASES:
        data = vectors(kind, count, args.dim)
        ours, kept = median_seconds(first_of_each_group, data, args.repeat)
        links = int(((data @ data.T) > 0.94).sum()) - count
        line = f"{kind:7s} {count:6d} hits  {links:>11,d} links  pixsearch {ours * 1000:9.1f} ms  kept {len(kept):5d}"
        if reference is not None and links <= REFERENCE_MAX_LINKS:
            theirs, dropped = median_seconds(reference, data, 1)
            same = kept == [i for i in range(count) if i not in dropped]
            line += f"  clip-retrieval {theirs * 1000:9.1f} ms  ratio {theirs / ours:6.1f}x  same rows: {same}"
        elif reference is not None:
            line += "  clip-retrieval: not run (its link list would not fit in memory here)"
        print(line)


if __name__ == "__main__":
    main()
