"""A person's tag edits (add, confirm, remove) and listings, by image id or path."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pixsearch.errors import ConfigError, NotFoundError
from pixsearch.storage.annotations import (
    CONFIRMED,
    REJECTED,
    SUGGESTED,
    Tag,
    normalise_tag,
    set_tag_state,
    tags_of,
)
from pixsearch.storage.schema import ImageRow, TagRow

ACTIONS = {"add": CONFIRMED, "confirm": CONFIRMED, "remove": REJECTED}


def find_image(session: Session, ref: str) -> ImageRow:
    """The image a CLI argument names: an id (digits) or a path (as indexed, or relative to the cwd).

    Raises:
        NotFoundError: no image has that id or path.
    """
    ref = ref.strip()
    if ref.isdigit():
        row = session.get(ImageRow, int(ref))
        if row is not None:
            return row
    for candidate in dict.fromkeys(
        [ref, str(Path(ref).expanduser().absolute()), str(Path(ref).expanduser().resolve())]
    ):
        row = session.execute(select(ImageRow).where(ImageRow.path == candidate)).scalar_one_or_none()
        if row is not None:
            return row
    raise NotFoundError(f"no image in the library with id or path {ref!r}")


def edit_tag(session: Session, image_id: int, name: str, action: str) -> Tag:
    """Apply a person's `action` ('add', 'confirm' or 'remove') and return the tag as now stored.

    'add' and 'confirm' make the tag confirmed (a model never overwrites it); 'remove' makes it
    rejected (hidden, and no model adds it again).

    Raises:
        NotFoundError: no such image. ConfigError: an empty or overlong tag, or an unknown action.
    """
    if action not in ACTIONS:
        raise ConfigError(f"tag action must be one of {', '.join(ACTIONS)}, got {action!r}")
    set_tag_state(session, image_id, name, ACTIONS[action])
    stored = {normalise_tag(t.name): t for t in tags_of(session, image_id, include_rejected=True)}
    return stored[normalise_tag(name)]


def tag_counts(session: Session, limit: int = 1000) -> list[tuple[str, int, int]]:
    """(tag, photos where confirmed, photos where suggested) over the library, most used first."""
    confirmed = func.sum((TagRow.state == CONFIRMED).cast(TagRow.id.type))
    suggested = func.sum((TagRow.state == SUGGESTED).cast(TagRow.id.type))
    rows = session.execute(
        select(func.min(func.coalesce(TagRow.label, TagRow.name)), confirmed, suggested)
        .where(TagRow.state != REJECTED)
        .group_by(TagRow.name)
        .order_by((confirmed + suggested).desc(), TagRow.name)
        .limit(limit)
    )
    return [(name, int(c or 0), int(s or 0)) for name, c, s in rows]
