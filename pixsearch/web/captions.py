"""Captions, kept in `<library>/captions.json`, keyed by the image's content hash.

Why a JSON file and not a table: a caption is made on the first view of a result page, so the
store holds the photos people looked at (hundreds, thousands), written at human pace, read by one
server process. A dict in memory, rewritten whole to a temp file and renamed over the old one under
a lock, is enough and needs no schema change. Keying by content hash means a moved or re-indexed
file keeps its caption, and a reused image id can never show another photo's caption. Bulk
captioning of a whole library or several server processes would want a SQL table instead
(see the web package's notes in the project report).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from pixsearch.errors import LibraryError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL = "model"
USER = "user"


@dataclass(frozen=True)
class Caption:
    text: str
    source: str  # MODEL or USER
    model: str | None  # the captioner spec, for MODEL captions
    created_at: str  # ISO 8601, UTC

    def is_current(self, captioner: str | None) -> bool:
        """A user's caption always stands; a model's only while that model is the configured one."""
        return self.source == USER or (captioner is not None and self.model == captioner)


class CaptionStore:
    """Thread-safe; every `put` is on disk (fsync + rename) before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._captions = self._read()

    def _read(self) -> dict[str, Caption]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            # the file is a cache of model output plus user edits; refuse to silently overwrite edits
            raise LibraryError(f"caption file {self.path} is unreadable ({error}); fix or remove it") from None
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            raise LibraryError(f"caption file {self.path} is not a version {FORMAT_VERSION} caption file")
        captions: dict[str, Caption] = {}
        for key, value in raw.get("captions", {}).items():
            try:
                captions[key] = Caption(**value)
            except TypeError:
                log.warning("caption file %s: entry %s is malformed; ignored", self.path, key)
        return captions

    def get(self, content_hash: str) -> Caption | None:
        with self._lock:
            return self._captions.get(content_hash)

    def put(self, content_hash: str, text: str, source: str, model: str | None) -> Caption:
        caption = Caption(text, source, model, datetime.now(UTC).isoformat(timespec="seconds"))
        with self._lock:
            updated = dict(self._captions)
            updated[content_hash] = caption
            self._write(updated)
            self._captions = updated
        return caption

    def __len__(self) -> int:
        with self._lock:
            return len(self._captions)

    def _write(self, captions: dict[str, Caption]) -> None:
        payload = {"version": FORMAT_VERSION, "captions": {key: asdict(value) for key, value in captions.items()}}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, ensure_ascii=False, indent=0)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
