"""Indexer: scanning, hashing, incremental diff, decoding, batching, checkpointed writes."""

from __future__ import annotations

from pixsearch.indexer.run import Indexer, IndexOptions, IndexReport, Progress

__all__ = ["IndexOptions", "IndexReport", "Indexer", "Progress"]
