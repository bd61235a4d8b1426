"""Bringing an index file that lags behind the database up to date in memory, instead of rebuilding it.

A writer commits each batch of vectors (and bumps the generation) at once but writes the index file
only every few minutes, so a reader that opens the library meanwhile finds a file a few thousand
vectors behind. Rebuilding it from the stored vectors reads every vector from SQL, and above the
ANN threshold also trains the index: minutes at a million photos, on the first query after every
batch the writer commits. Instead, the reader applies what changed since the file was written to
the loaded index in memory (as the writer itself does), never writing a file:

- vectors added since: ids above the file's largest id (the database allocates ids upward);
- vectors removed since: found when the id digest of the file plus the added ids is not the
  database's, by reading every stored id (integers only, no vectors);
- an id the database gave out again after removing it (SQLite reuses the largest id once its row
  is gone) would hold another vector than the file's under the same id. That can only happen if the
  file's largest id was removed, so that row is compared, owner and vector bytes, with the file's,
  and so are a few rows spread over the file (a file of another library does not pass); if one
  differs, nothing is trusted and the caller rebuilds.

The result holds exactly the database's ids (checked against its digest) at the database's generation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from pixsearch.storage.vector_file import IdDigest, arrays_of_rows
from pixsearch.storage.vector_index import VectorIndex

log = logging.getLogger(__name__)

# more changes than this share of the library (and than MIN_CHANGES): a rebuild is about as cheap, and retrains
MAX_SHARE = 0.25
MIN_CHANGES = 10_000
SAMPLED = 16  # rows of the file compared with the database besides its last one


@dataclass(frozen=True)
class Stored:
    """Where one kind of vector lives in the database: its table and owner column."""

    table: type
    owner: object  # the owner column (image or text row id)
    key: str  # the model key


def catch_up(index: VectorIndex, session: Session, stored: Stored, digest: IdDigest) -> bool:
    """Apply the database's changes since `index` was written; True when `index` now holds exactly
    the database's vectors (`digest`), False when it cannot be trusted (then it is left half-changed:
    the caller drops it and rebuilds).

    Call it with the database unchanged between reading `digest` and returning (the caller checks the
    generation before and after).
    """
    ids = index.ids()
    top = int(ids.max()) if len(ids) else 0
    probes = np.unique(np.append(ids[np.linspace(0, len(ids) - 1, SAMPLED).astype(int)], top)) if len(ids) else ids
    if not _same_rows(index, session, stored, probes, top):
        log.info("the index file's vectors are not the database's: rebuilding")
        return False
    added_ids, added_owners, added = _rows(session, stored, stored.table.id > top, index.dim)
    removed = np.empty(0, dtype=np.int64)
    if IdDigest.of(np.concatenate([ids, added_ids])) != digest:
        # some vectors were removed since the file (or it missed some): compare every stored id. An id
        # at or below the file's last one is never given out again while that row is there (checked
        # above), so an id in both holds the same vector in both
        stored_ids = _stored_ids(session, stored)
        removed = np.setdiff1d(ids, stored_ids, assume_unique=True)
        missing = np.setdiff1d(stored_ids[stored_ids <= top], ids, assume_unique=True)
        if len(missing):
            more = _rows(session, stored, stored.table.id.in_(missing.tolist()), index.dim)
            added_ids, added_owners, added = (
                np.concatenate(pair) for pair in zip((added_ids, added_owners, added), more, strict=True)
            )
    if len(added_ids) + len(removed) > max(MAX_SHARE * len(ids), MIN_CHANGES):
        return False
    index.remove(removed)
    index.add(added_ids, added, added_owners)
    if index.digest() != digest:
        return False
    log.info("index brought up to date in memory: %d vectors added, %d removed", len(added_ids), len(removed))
    return True


def _same_rows(index: VectorIndex, session: Session, stored: Stored, ids: npt.NDArray[np.int64], top: int) -> bool:
    """Whether each of `ids` that is still stored holds the owner and the very vector bytes the index
    holds, and `top` (the file's last id) is still stored."""
    rows = {
        int(row[0]): (int(row[1]), bytes(row[2]))
        for row in session.execute(
            select(stored.table.id, stored.owner, stored.table.vector).where(
                stored.table.id.in_(ids.tolist()), stored.table.model_key == stored.key
            )
        )
    }
    if top not in rows and len(ids):
        return False
    _, vectors = index.vectors_of(ids)
    owners = index.owners_of(ids)
    return all(
        rows[int(i)] == (int(owner), vector.tobytes())
        for i, owner, vector in zip(ids, owners, vectors, strict=True)
        if int(i) in rows
    )


def _rows(
    session: Session, stored: Stored, where: object, dim: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(ids, owners, vectors) of the stored vectors matching `where`, ascending by id."""
    rows = session.execute(
        select(stored.table.id, stored.owner, stored.table.vector)
        .where(where, stored.table.model_key == stored.key)
        .order_by(stored.table.id)
    ).all()
    return arrays_of_rows(rows, dim)


def _stored_ids(session: Session, stored: Stored) -> npt.NDArray[np.int64]:
    """Every stored id of the model, ascending."""
    query = select(stored.table.id).where(stored.table.model_key == stored.key).order_by(stored.table.id)
    return np.fromiter(session.execute(query).scalars(), dtype=np.int64)
