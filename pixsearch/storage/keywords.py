"""The keyword index: one document per image (file and folder names, captions a person wrote, tags,
OCR text, EXIF), searched with SQLite FTS5 (bm25) or PostgreSQL full text (ts_rank).

Captions a model wrote are left out: they are made when someone opens a photo's page, so indexing them
would let viewing a photo move it up every word query its caption happens to share (one opened photo
ranked 2nd for "red", "blue square" and "a small green triangle"), and a caption model's words are no
better evidence than the vectors they would outrank. A person's caption (spec 'person') is indexed.

Documents are rebuilt from the tables by `refresh` after anything about an image changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from pixsearch.storage.schema import CaptionRow, ImageRow, OcrText, TagRow

COLUMNS = ("path", "caption", "tags", "ocr", "exif")
PERSON_CAPTION = "person"  # the spec of a caption a person wrote (annotations.PERSON); only these are indexed


def ensure_keyword_index(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        connection.execute(
            text(
                "CREATE VIRTUAL TABLE IF NOT EXISTS keywords USING fts5("
                "path, caption, tags, ocr, exif, tokenize = 'unicode61 remove_diacritics 2')"
            )
        )
    elif connection.dialect.name == "postgresql":
        connection.execute(
            text("CREATE TABLE IF NOT EXISTS keywords (image_id INTEGER PRIMARY KEY, document tsvector NOT NULL)")
        )
        connection.execute(text("CREATE INDEX IF NOT EXISTS keywords_document ON keywords USING GIN (document)"))


def _documents(session: Session, image_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    docs: dict[int, dict[str, str]] = {}
    for row in session.execute(select(ImageRow).where(ImageRow.id.in_(image_ids))).scalars():
        exif = " ".join(
            part
            for part in (
                row.camera or "",
                row.taken_at.strftime("%Y %B %Y-%m-%d") if row.taken_at else "",
            )
            if part
        )
        docs[row.id] = {"path": row.path, "caption": "", "tags": "", "ocr": "", "exif": exif}
    for image_id, caption in session.execute(
        select(CaptionRow.image_id, CaptionRow.text).where(
            CaptionRow.image_id.in_(image_ids), CaptionRow.spec == PERSON_CAPTION
        )
    ):
        docs[image_id]["caption"] += caption + " "
    for image_id, name in session.execute(
        select(TagRow.image_id, TagRow.name).where(TagRow.image_id.in_(image_ids), TagRow.state != "rejected")
    ):
        docs[image_id]["tags"] += name + " ; "
    for image_id, ocr in session.execute(select(OcrText.image_id, OcrText.text).where(OcrText.image_id.in_(image_ids))):
        docs[image_id]["ocr"] = ocr
    return docs


def refresh(session: Session, image_ids: Iterable[int]) -> None:
    """Rebuild the keyword documents of these images (missing images are dropped from the index)."""
    ids = sorted(set(image_ids))
    if not ids:
        return
    remove(session, ids)
    dialect = session.get_bind().dialect.name
    for image_id, doc in _documents(session, ids).items():
        if dialect == "sqlite":
            session.execute(
                text(
                    "INSERT INTO keywords (rowid, path, caption, tags, ocr, exif) "
                    "VALUES (:id, :path, :caption, :tags, :ocr, :exif)"
                ),
                {"id": image_id, **doc},
            )
        elif dialect == "postgresql":
            session.execute(
                text("INSERT INTO keywords (image_id, document) VALUES (:id, to_tsvector('simple', :doc))"),
                {"id": image_id, "doc": _words(" ".join(doc[c] for c in COLUMNS))},
            )


def _words(text: str) -> str:
    """Split like FTS5's unicode61 does (on anything not a letter or digit), so PostgreSQL's parser
    does not keep 'beach_2020/img_1.jpg' as one file-name token."""
    return re.sub(r"[\W_]+", " ", text)


def remove(session: Session, image_ids: Sequence[int]) -> None:
    dialect = session.get_bind().dialect.name
    column = "rowid" if dialect == "sqlite" else "image_id"
    if dialect not in {"sqlite", "postgresql"}:
        return
    for start in range(0, len(image_ids), 500):
        chunk = list(image_ids[start : start + 500])
        params = {f"i{n}": value for n, value in enumerate(chunk)}
        placeholders = ", ".join(f":i{n}" for n in range(len(chunk)))
        session.execute(text(f"DELETE FROM keywords WHERE {column} IN ({placeholders})"), params)


@dataclass(frozen=True)
class KeywordQuery:
    """Words and phrases that must all match, and words that must not."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    any_of: tuple[str, ...] = field(default=())  # at least one of these (used when nothing is required)

    def __bool__(self) -> bool:
        return bool(self.include or self.any_of)


def _quote(term: str) -> str:
    # FTS5 reads a NUL as the end of the expression ("unterminated string"): it separates words instead
    return '"' + term.replace("\x00", " ").replace('"', '""') + '"'


def fts5_expression(query: KeywordQuery) -> str:
    """An FTS5 MATCH expression; every term is quoted, so user text can never be FTS5 syntax."""
    parts = [_quote(t) for t in query.include]
    if query.any_of:
        parts.append("(" + " OR ".join(_quote(t) for t in query.any_of) + ")")
    expression = " AND ".join(parts)
    for term in query.exclude:
        expression = f"({expression}) NOT {_quote(term)}"
    return expression


def search(session: Session, query: KeywordQuery, limit: int, window: int | None = None) -> list[tuple[int, float]]:
    """(image id, relevance) best first; relevance is higher-is-better.

    window: when more photos than this match, rank only the most recently indexed `window` of them
        (the highest ids). Ranking reads every match it ranks: without a window a word found in
        50,000 of a million photos cost 86 ms a query on SQLite (15 ms with a window of 4,096).
        None: rank every match."""
    if not query:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return _search_sqlite(session, query, limit, window)
    if dialect == "postgresql":
        return _search_postgres(session, query, limit, window)
    return []


def matching_ids(session: Session, query: KeywordQuery) -> set[int]:
    """Every photo the query matches, unranked (e.g. the photos a -word excludes: all of them)."""
    if not query:
        return set()
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        rows = session.execute(
            text("SELECT rowid FROM keywords WHERE keywords MATCH :q"), {"q": fts5_expression(query)}
        )
        return {int(image_id) for (image_id,) in rows}
    if dialect == "postgresql":
        where, params = _postgres_matches(query)
        return {int(image_id) for (image_id,) in session.execute(text(f"SELECT image_id {where}").bindparams(**params))}
    return set()


def _search_sqlite(session: Session, query: KeywordQuery, limit: int, window: int | None) -> list[tuple[int, float]]:
    params = {"q": fts5_expression(query), "n": limit}
    if window is None:
        sql = (
            "SELECT rowid, bm25(keywords) FROM keywords WHERE keywords MATCH :q ORDER BY bm25(keywords), rowid LIMIT :n"
        )
    else:  # FTS5 walks the matches by descending rowid and stops after the window: bm25 runs on those only
        sql = (
            "SELECT id, score FROM (SELECT rowid AS id, bm25(keywords) AS score FROM keywords WHERE keywords MATCH :q "
            "ORDER BY rowid DESC LIMIT :w) ORDER BY score, id LIMIT :n"
        )
        params["w"] = window
    return [(int(image_id), -float(score)) for image_id, score in session.execute(text(sql), params)]


def _postgres_matches(query: KeywordQuery) -> tuple[str, dict[str, str]]:
    """The FROM ... WHERE part that selects the query's matches on PostgreSQL (`document`, the
    tsquery as `query.q`), and its parameters."""
    # tsquery's operators are && || !! (a lone & or | is no operator on tsquery values)
    positive = " && ".join(f"phraseto_tsquery('simple', :p{i})" for i in range(len(query.include)))
    any_of = " || ".join(f"plainto_tsquery('simple', :a{i})" for i in range(len(query.any_of)))
    negative = [f"!! phraseto_tsquery('simple', :n{i})" for i in range(len(query.exclude))]
    expression = " && ".join(p for p in [positive, f"({any_of})" if any_of else "", *negative] if p)
    params = {f"p{i}": _words(t) for i, t in enumerate(query.include)}
    params |= {f"a{i}": _words(t) for i, t in enumerate(query.any_of)}
    params |= {f"n{i}": _words(t) for i, t in enumerate(query.exclude)}
    return f"FROM keywords, (SELECT {expression} AS q) AS query WHERE document @@ query.q", params


def _search_postgres(session: Session, query: KeywordQuery, limit: int, window: int | None) -> list[tuple[int, float]]:
    where, params = _postgres_matches(query)
    matches = f"SELECT image_id, document, query.q {where}"
    if window is not None:
        matches += " ORDER BY image_id DESC LIMIT :w"
        params["w"] = window
    rows = session.execute(
        text(
            f"SELECT image_id, ts_rank(document, q) FROM ({matches}) AS found ORDER BY 2 DESC, image_id LIMIT :n"
        ).bindparams(**params, n=limit)
    )
    return [(int(image_id), float(score)) for image_id, score in rows]
