"""clip-retrieval's own code, taken from the installed package (`pip install --no-deps clip-retrieval`),
for comparisons on the same input. Its modules import a web stack (flask, pandas, ...) that pixsearch's
tests do not install, so the functions needed are compiled from its source file alone."""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np


def clip_back_source() -> str | None:
    """The text of clip_retrieval/clip_back.py, or None when clip-retrieval is not installed."""
    try:
        return Path(distribution("clip-retrieval").locate_file("clip_retrieval/clip_back.py")).read_text()
    except (PackageNotFoundError, OSError):
        return None


def knn_service_dedup() -> Callable[[np.ndarray], set[int]] | None:
    """KnnService's deduplication (get_non_uniques over connected_components): vectors in rank order ->
    the row numbers it drops. None when clip-retrieval is not installed."""
    source = clip_back_source()
    if source is None:
        return None
    service = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "KnnService")
    wanted = [
        n
        for n in service.body
        if isinstance(n, ast.FunctionDef) and n.name in ("connected_components", "get_non_uniques")
    ]
    namespace: dict = {"faiss": faiss, "np": np, "defaultdict": defaultdict}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "clip_back.py", "exec"), namespace)  # noqa: S102
    this = SimpleNamespace(connected_components=lambda neighbours: namespace["connected_components"](this, neighbours))
    return lambda vectors: set(namespace["get_non_uniques"](this, np.ascontiguousarray(vectors, dtype=np.float32)))
