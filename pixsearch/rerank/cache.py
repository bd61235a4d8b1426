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
import io
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from pixsearch.atomic import write_atomic
from pixsearch.errors import ConfigError
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
    """Features stored as float16 files under `<library>/rerank-cache/<reranker key>/`, at most
    `max_bytes` of them (None: no bound); a full cache keeps what it has and takes no more."""

    def __init__(self, folder: Path, max_bytes: int | None = None, spec: str | None = None) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.spec = spec  # written next to the files, so `status` can say whose they are
        self._used: int | None = None
        self._refused = False  # a feature did not fit

    @property
    def used_bytes(self) -> int:
        """Bytes of feature files in the folder (counted once, then kept up to date by `put`)."""
        if self._used is None:
            files = self.folder.glob("*.pt") if self.folder.is_dir() else []
            self._used = sum(f.stat().st_size for f in files)
        return self._used

    @property
    def full(self) -> bool:
        """The bound refused a feature (or leaves no room at all)."""
        return self.max_bytes is not None and (self._refused or self.used_bytes >= self.max_bytes)

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
            self._used = None
            return None

    def put(self, key: tuple[int, str], feature: Any) -> bool:
        """Store a feature; False (nothing written) when its file would pass the bound."""
        buffer = io.BytesIO()
        torch.save(to_storage(feature), buffer)
        data = buffer.getvalue()
        used = self.used_bytes  # counted before this file exists
        path = self._path(key)
        before = path.stat().st_size if path.exists() else 0
        if self.max_bytes is not None and used - before + len(data) > self.max_bytes:
            self._refused = True
            return False
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.spec is not None:
                write_atomic(self.folder / SPEC_FILE, lambda handle: handle.write(self.spec.encode()))
        write_atomic(path, lambda handle: handle.write(data))
        self._used = used - before + len(data)
        return True

    def __contains__(self, key: tuple[int, str]) -> bool:
        return self._path(key).exists()


SPEC_FILE = "reranker.txt"
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """Bytes of a size such as '500M', '2G', '1.5GiB' or '800000000' (k/M/G/T are powers of 1000).

    Raises:
        ConfigError: not a size >= 0, naming it.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", str(text).lower())
    if match is None:
        raise ConfigError(f"size {text!r} is not a number of bytes with an optional unit (e.g. 500M, 2G, 1.5GiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


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
