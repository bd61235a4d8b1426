"""Captions of the result pages, kept in the library's SQL captions table through
`pixsearch.storage.annotations`. A person's caption is part of the keyword index and searchable; a
model's is shown but not indexed (see `pixsearch.storage.keywords`), so viewing a photo moves no ranking.

A person's caption is stored under the spec 'person' and always shown; a model's caption under its
captioner spec, shown while that captioner is the configured one and the photo's bytes are those it
described. A caption generated for a caller who may not write is only remembered in memory (a
bounded cache per app), so viewing a photo never writes to the library. Earlier versions kept captions in `<library>/captions.json` (keyed by content hash);
`import_legacy_json` moves such a file into the table once and renames it `captions.json.imported`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from pixsearch.storage import Library
from pixsearch.storage.annotations import PERSON, caption_of, set_caption
from pixsearch.storage.schema import CaptionRow, ImageRow

log = logging.getLogger(__name__)

MODEL = "model"
USER = "user"
LEGACY_FILE = "captions.json"


@dataclass(frozen=True)
class Caption:
    text: str
    source: str  # MODEL or USER
    model: str | None  # the captioner spec, for MODEL captions
    created_at: str  # ISO 8601
    stored: bool = True  # False: generated for a caller who may not write, kept in memory only

    def is_current(self, captioner: str | None) -> bool:
        """A user's caption always stands; a model's only while that model is the configured one."""
        return self.source == USER or (captioner is not None and self.model == captioner)


class CaptionStore:
    """Reads and writes captions of one library; safe to use from several threads (one session each)."""

    def __init__(self, library: Library, remembered: int = 512) -> None:
        self.library = library
        self.capacity = remembered
        self._remembered: OrderedDict[tuple[int, str, str], Caption] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, row: ImageRow, captioner: str | None) -> Caption | None:
        """The person's caption of the photo, else `captioner`'s if it describes the current bytes:
        stored, else remembered."""
        with self.library.session() as session:
            for spec, source in ((PERSON, USER), (captioner, MODEL)):
                if spec is None:
                    continue
                text = caption_of(session, row.id, spec)
                if text is not None:
                    return Caption(text, source, None if source == USER else spec, _created(session, row.id, spec))
        return self.recalled(row, captioner)

    def texts(self, rows: Sequence[ImageRow], captioner: str | None) -> dict[int, str]:
        """Image id -> the caption text `get` would give, for many photos in one query (no dates)."""
        specs = [PERSON] + ([captioner] if captioner else [])
        found: dict[int, dict[str, CaptionRow]] = {}
        with self.library.session() as session:
            query = select(CaptionRow).where(CaptionRow.image_id.in_([r.id for r in rows]), CaptionRow.spec.in_(specs))
            for caption in session.execute(query).scalars():
                found.setdefault(caption.image_id, {})[caption.spec] = caption
        texts = {}
        for row in rows:
            stored = found.get(row.id, {})
            person, model = stored.get(PERSON), stored.get(captioner or "")
            if person is not None and person.content_hash == row.content_hash:
                texts[row.id] = person.text
            elif model is not None and model.content_hash == row.content_hash:
                texts[row.id] = model.text
            elif (remembered := self.recalled(row, captioner)) is not None:
                texts[row.id] = remembered.text
        return texts

    def remember(self, row: ImageRow, text: str, model: str) -> Caption:
        """Keep `model`'s caption of the photo's current bytes in memory only (the oldest go first)."""
        caption = Caption(text, MODEL, model, datetime.now().isoformat(timespec="seconds"), stored=False)
        with self._lock:
            self._remembered[(row.id, row.content_hash, model)] = caption
            while len(self._remembered) > self.capacity:
                self._remembered.popitem(last=False)
        return caption

    def recalled(self, row: ImageRow, captioner: str | None) -> Caption | None:
        """The caption `remember` kept for the photo's current bytes and `captioner`, if any."""
        if captioner is None:
            return None
        with self._lock:
            caption = self._remembered.get((row.id, row.content_hash, captioner))
        return None if caption is None else replace(caption)

    def put(self, row: ImageRow, text: str, source: str, model: str | None) -> Caption:
        """Store a caption (a person's when `source` is USER, else `model`'s) and return it."""
        spec = PERSON if source == USER else model
        if spec is None:
            raise ValueError("a model caption needs the captioner spec")
        with self.library.session() as session:
            set_caption(session, row.id, spec, text)
            session.flush()
            return Caption(text, source, None if source == USER else spec, _created(session, row.id, spec))


def _created(session, image_id: int, spec: str) -> str:  # type: ignore[no-untyped-def]
    created = session.execute(
        select(CaptionRow.created_at).where(CaptionRow.image_id == image_id, CaptionRow.spec == spec)
    ).scalar_one()
    return created.isoformat(timespec="seconds")


def import_legacy_json(library: Library) -> int:
    """Move the captions of an old `captions.json` into the table; returns how many were stored.

    A file that cannot be read is left in place (and logged): it may hold captions people wrote.
    """
    path = library.root / LEGACY_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        entries = raw["captions"] if isinstance(raw, dict) and raw.get("version") == 1 else None
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError) as error:
        log.warning("old caption file %s is unreadable (%s); left as it is", path, error)
        return 0
    if not isinstance(entries, dict):
        log.warning("old caption file %s is not a version 1 caption file; left as it is", path)
        return 0
    stored = 0
    with library.session() as session:
        for content_hash, entry in entries.items():
            if not isinstance(entry, dict) or not entry.get("text"):
                continue
            spec = PERSON if entry.get("source") == USER else entry.get("model")
            if not spec:
                continue
            for image_id in session.execute(select(ImageRow.id).where(ImageRow.content_hash == content_hash)).scalars():
                set_caption(session, image_id, spec, str(entry["text"]))
                stored += 1
    path.rename(Path(str(path) + ".imported"))
    log.info("moved %d captions from %s into the library database", stored, path)
    return stored
