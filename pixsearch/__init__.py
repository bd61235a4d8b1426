"""pixsearch: a self-hosted cross-modal search engine for image collections."""

from __future__ import annotations

__version__ = "0.1.0"
