"""Caches of per-image reranker work, in two tiers.

The image side is most of a reranker's cost and does not depend on the query, so it is computed
once per image:
- vision features (the vision tower's output the cross-attention reads; BLIP-base 0.9 MB per image
  as float16): a bounded in-memory LRU, and optionally on disk in float16;
- below them, image states (`models.image_state`: each cross-attention layer's image keys/values;
  BLIP-base 21 MB per image as float16): a second, separately bounded in-memory LRU, whose default
  size follows the memory this machine has free (`state_budget`). Never on disk: at 24x the size of
  the features they would cost 210 GB for 10,000 photos.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from pixsearch.atomic import write_atomic
from pixsearch.models.image_state import ImageState

MAX_STATE_BUDGET = 2 * 2**30


def feature_bytes(feature: Any) -> int:
    if isinstance(feature, ImageState):
        return feature.nbytes
    if isinstance(feature, torch.Tensor):
        return feature.numel() * feature.element_size()
    if isinstance(feature, (tuple, list)):
        return sum(feature_bytes(part) for part in feature)
    return 0


def _map(feature: Any, fn) -> Any:
    if isinstance(feature, torch.Tensor):
        return fn(feature)
    if isinstance(feature, (tuple, list)):
        return type(feature)(_map(part, fn) for part in feature)
    return feature


def to_storage(feature: Any) -> Any:
    """float16 copy of floating tensors (half the bytes; the reranker casts back when scoring)."""
    return _map(feature, lambda t: t.to(torch.float16) if t.is_floating_point() else t)


def from_storage(feature: Any) -> Any:
    return _map(feature, lambda t: t.to(torch.float32) if t.dtype == torch.float16 else t)


def available_memory() -> int:
    """Bytes of memory this machine can still give (Linux MemAvailable; else free pages; else 0)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def state_budget(available: int | None = None) -> int:
    """The default size of the image-state tier: a quarter of the free memory, at most 2 GiB."""
    free = available_memory() if available is None else available
    return min(MAX_STATE_BUDGET, free // 4)


def reranker_key(spec: str) -> str:
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


class MemoryCache:
    """An LRU bounded by bytes; keys are (image id, content hash) so a changed file misses."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[int, str], Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple[int, str]) -> Any | None:
        feature = self._items.get(key)
        if feature is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return feature

    def put(self, key: tuple[int, str], feature: Any) -> None:
        size = feature_bytes(feature)
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= feature_bytes(old)
        self._items[key] = feature
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= feature_bytes(evicted)

    def __len__(self) -> int:
        return len(self._items)


class DiskCache:
    """Features stored as float16 files under `<library>/rerank-cache/<reranker key>/`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: tuple[int, str]) -> Path:
        image_id, content_hash = key
        return self.folder / f"{image_id}-{content_hash[:16]}.pt"

    def get(self, key: tuple[int, str]) -> Any | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return from_storage(torch.load(path, weights_only=True))
        except Exception:  # noqa: BLE001 - torch.load raises many types on a torn file
            path.unlink(missing_ok=True)  # a torn write from a killed run: recompute it
            return None

    def put(self, key: tuple[int, str], feature: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        write_atomic(path, lambda handle: torch.save(to_storage(feature), handle))

    def __contains__(self, key: tuple[int, str]) -> bool:
        return self._path(key).exists()


def disk_usage(library_root: Path) -> dict[str, int]:
    """Bytes used by each reranker's disk cache in a library."""
    root = library_root / "rerank-cache"
    if not root.is_dir():
        return {}
    return {
        folder.name: sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".pt")
        for folder in root.iterdir()
        if folder.is_dir()
    }
