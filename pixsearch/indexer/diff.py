"""What an indexing run must do, worked out from the scan and the database: pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pixsearch.indexer.decode import Hashed
from pixsearch.indexer.scan import Entry


@dataclass(frozen=True)
class Known:
    """An image row as the planner needs it."""

    image_id: int
    path: str
    size: int
    mtime: float
    content_hash: str
    has_vector: bool


@dataclass
class Scanned:
    """The scan held against the database, before any file is read."""

    unchanged: int = 0
    to_hash: list[Entry] = field(default_factory=list)  # new, or size/mtime changed
    missing_vector: list[str] = field(default_factory=list)  # unchanged but no vector for this model
    gone: dict[str, Known] = field(default_factory=dict)  # in the database, not on disk


@dataclass
class Actions:
    touch: list[tuple[int, Hashed]] = field(default_factory=list)  # same bytes, new mtime
    move: list[tuple[int, Hashed]] = field(default_factory=list)  # a gone row's bytes at a new path
    copy: list[tuple[int, Hashed]] = field(default_factory=list)  # bytes already indexed elsewhere
    embed: list[str] = field(default_factory=list)  # new or changed content
    delete: list[int] = field(default_factory=list)  # gone and not moved


def compare_scan(entries: Iterable[Entry], known: dict[str, Known]) -> Scanned:
    """Split scanned files into unchanged, to-hash and missing-vector; what is left of `known` is gone."""
    result = Scanned()
    remaining = dict(known)
    for entry in entries:
        row = remaining.pop(entry.path, None)
        if row is None or row.size != entry.size or row.mtime != entry.mtime:
            result.to_hash.append(entry)
        elif not row.has_vector:
            result.missing_vector.append(entry.path)
        else:
            result.unchanged += 1
    result.gone = remaining
    return result


def resolve(
    hashed: Sequence[Hashed],
    known: dict[str, Known],
    gone: dict[str, Known],
    by_hash: dict[str, list[Known]],
) -> Actions:
    """Decide, per hashed file, whether it is touched, moved, a copy, or needs embedding.

    Args:
        hashed: the files that were new or changed by size/mtime, with their content hashes.
        known: every image row under the scanned folders, by path.
        gone: the rows whose files were not found.
        by_hash: every image row of the library with a vector for the current model, by hash.
    """
    actions = Actions()
    unclaimed = {row.image_id: row for row in gone.values()}
    for item in hashed:
        row = known.get(item.path)
        if row is not None and row.content_hash == item.content_hash and row.has_vector:
            actions.touch.append((row.image_id, item))
            continue
        if row is not None:  # same path, new bytes
            actions.embed.append(item.path)
            continue
        twins = by_hash.get(item.content_hash, [])
        moved = next((t for t in twins if t.image_id in unclaimed), None)
        if moved is not None:
            del unclaimed[moved.image_id]
            actions.move.append((moved.image_id, item))
        elif twins:
            actions.copy.append((twins[0].image_id, item))
        else:
            actions.embed.append(item.path)
    actions.delete = sorted(unclaimed)
    return actions
