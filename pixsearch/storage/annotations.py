"""Tags, OCR text and captions of images. Every change refreshes the image's keyword document.

Tag rules: a model only *suggests*; a person's add or confirm makes a tag 'confirmed', which no
model overwrites; a person's removal makes it 'rejected', which hides it and keeps models from
adding it again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pixsearch.errors import ConfigError, NotFoundError
from pixsearch.storage import keywords
from pixsearch.storage.schema import CaptionRow, ImageRow, OcrText, TagRow

SUGGESTED, CONFIRMED, REJECTED = "suggested", "confirmed", "rejected"
PERSON = "person"
MAX_TAG_LENGTH = 200


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` as both databases can hold it: a NUL (PostgreSQL text cannot hold one) becomes a space,
    a lone surrogate (not UTF-8) the replacement character. Model output and file metadata go through
    this; the web API refuses such text outright instead."""
    return _UNSTORABLE.sub(lambda m: " " if m.group() == "\x00" else "\ufffd", text)


@dataclass(frozen=True)
class Tag:
    name: str
    source: str
    score: float | None
    state: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "score": self.score, "state": self.state}


def tag_label(name: str) -> str:
    """A tag as shown: the case it was typed in, single spaces; raises ConfigError for an empty or long one."""
    clean = " ".join(storable(name).split())
    if not clean:
        raise ConfigError("a tag cannot be empty")
    if len(clean) > MAX_TAG_LENGTH:
        raise ConfigError(f"tag {clean[:40]!r}... is longer than {MAX_TAG_LENGTH} characters")
    return clean


def normalise_tag(name: str) -> str:
    """A tag's key: tags are compared lower-case with single spaces; raises ConfigError for an empty or long one."""
    return tag_label(name).lower()


def _image(session: Session, image_id: int) -> ImageRow:
    row = session.get(ImageRow, image_id)
    if row is None:
        raise NotFoundError(f"image {image_id} is not in the library")
    return row


def _rows(session: Session, image_id: int) -> dict[str, TagRow]:
    return {r.name: r for r in session.execute(select(TagRow).where(TagRow.image_id == image_id)).scalars()}


def suggest_tags(session: Session, image_id: int, tags: Sequence[tuple[str, float]], source: str) -> None:
    """Replace the suggestions `source` made for this image; confirmed and rejected tags stay as they are."""
    _image(session, image_id)
    rows = _rows(session, image_id)
    now = datetime.now()
    wanted = {normalise_tag(name): (tag_label(name), float(score)) for name, score in tags}
    for name, row in rows.items():
        if row.state == SUGGESTED and row.source == source and name not in wanted:
            session.delete(row)
    for name, (label, score) in wanted.items():
        row = rows.get(name)
        if row is None:
            session.add(
                TagRow(
                    image_id=image_id,
                    name=name,
                    label=label,
                    source=source,
                    score=score,
                    state=SUGGESTED,
                    updated_at=now,
                )
            )
        elif row.state == SUGGESTED:
            row.label, row.source, row.score, row.updated_at = label, source, score, now
    session.flush()
    keywords.refresh(session, [image_id])


def set_tag_state(session: Session, image_id: int, name: str, state: str, source: str = PERSON) -> None:
    """A person adds or confirms (state 'confirmed') or removes (state 'rejected') a tag.

    Matched case-insensitively; a confirmed tag shows the case the person typed."""
    if state not in {CONFIRMED, REJECTED}:
        raise ConfigError(f"a person can confirm or reject a tag, not set it to {state!r}")
    _image(session, image_id)
    label = tag_label(name)
    name = label.lower()
    row = _rows(session, image_id).get(name)
    now = datetime.now()
    if row is None:
        session.add(
            TagRow(image_id=image_id, name=name, label=label, source=source, score=None, state=state, updated_at=now)
        )
    else:
        row.state, row.updated_at = state, now
        if state == CONFIRMED:
            row.label = label
        if state == CONFIRMED and row.source != source and source != PERSON:
            row.source = source
    session.flush()
    keywords.refresh(session, [image_id])


def tags_of(session: Session, image_id: int, include_rejected: bool = False) -> list[Tag]:
    """Visible tags, confirmed first, then by score."""
    rows = [r for r in _rows(session, image_id).values() if include_rejected or r.state != REJECTED]
    rows.sort(key=lambda r: (r.state != CONFIRMED, -(r.score or 0.0), r.name))
    return [Tag(r.label or r.name, r.source, r.score, r.state) for r in rows]


def set_ocr_text(session: Session, image_id: int, text: str, engine: str) -> None:
    _image(session, image_id)
    row = session.get(OcrText, image_id)
    if row is None:
        session.add(OcrText(image_id=image_id, text=storable(text), engine=engine, updated_at=datetime.now()))
    else:
        row.text, row.engine, row.updated_at = storable(text), engine, datetime.now()
    session.flush()
    keywords.refresh(session, [image_id])


def ocr_text_of(session: Session, image_id: int) -> str | None:
    row = session.get(OcrText, image_id)
    return row.text if row else None


def set_caption(session: Session, image_id: int, spec: str, text: str) -> None:
    """Store the caption `spec` made (or a person wrote: spec 'person') for the image's current bytes."""
    image = _image(session, image_id)
    session.execute(delete(CaptionRow).where(CaptionRow.image_id == image_id, CaptionRow.spec == spec))
    session.add(
        CaptionRow(
            image_id=image_id,
            spec=spec,
            text=storable(text),
            content_hash=image.content_hash,
            created_at=datetime.now(),
        )
    )
    session.flush()
    keywords.refresh(session, [image_id])


def caption_of(session: Session, image_id: int, spec: str) -> str | None:
    """The caption `spec` made, if it still describes the image's current bytes."""
    image = _image(session, image_id)
    row = session.execute(
        select(CaptionRow).where(CaptionRow.image_id == image_id, CaptionRow.spec == spec)
    ).scalar_one_or_none()
    return row.text if row is not None and row.content_hash == image.content_hash else None
