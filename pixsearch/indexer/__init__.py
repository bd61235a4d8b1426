"""Indexer: scanning, hashing, incremental diff, decoding, batching, checkpointed writes.

The names below load lazily: decode workers import `pixsearch.indexer.decode`, and must not pay
for torch, which `run` imports.
"""

from __future__ import annotations

from typing import Any

__all__ = ["IndexOptions", "IndexReport", "Indexer", "Progress"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pixsearch.indexer import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
