"""Filters as SQL: which image ids a query may return."""

from __future__ import annotations

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from pixsearch.search.query import Filters
from pixsearch.storage.schema import ImageRow, OcrText, TagRow


def filter_query(filters: Filters) -> Select:
    query = select(ImageRow.id)
    conditions = []
    if filters.after:
        conditions.append(ImageRow.taken_at >= filters.after)
    if filters.before:
        conditions.append(ImageRow.taken_at < filters.before)
    if filters.camera:
        conditions.append(func.lower(ImageRow.camera).contains(filters.camera.lower(), autoescape=True))
    if filters.folder:
        conditions.append(func.lower(ImageRow.path).contains(filters.folder.lower(), autoescape=True))
    if filters.orientation == "portrait":
        conditions.append(ImageRow.height > ImageRow.width)
    elif filters.orientation == "landscape":
        conditions.append(ImageRow.width > ImageRow.height)
    elif filters.orientation == "square":
        conditions.append(ImageRow.width == ImageRow.height)
    if filters.has_text:
        has_text = select(OcrText.image_id).where(func.length(func.trim(OcrText.text)) > 0)
        conditions.append(ImageRow.id.in_(has_text))
    for tag in filters.tags:
        tagged = select(TagRow.image_id).where(TagRow.name == tag, TagRow.state != "rejected")
        conditions.append(ImageRow.id.in_(tagged))
    return query.where(and_(*conditions)) if conditions else query


def matching_ids(session: Session, filters: Filters) -> set[int] | None:
    """The ids that pass the filters, or None when there are no filters (everything passes)."""
    if not filters:
        return None
    return set(session.execute(filter_query(filters)).scalars())


def newest_first(session: Session, ids: set[int], limit: int) -> list[int]:
    """For a query that is only filters: the newest photos first (undated last, then by id)."""
    query = (
        select(ImageRow.id)
        .where(ImageRow.id.in_(ids))
        .order_by(ImageRow.taken_at.is_(None), ImageRow.taken_at.desc(), ImageRow.id)
        .limit(limit)
    )
    return list(session.execute(query).scalars())
