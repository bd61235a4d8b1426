"""Captions a model wrote stay out of keyword ranking; a person's caption is searchable."""

from __future__ import annotations

from pathlib import Path

import pytest
from images import write_folder
from sqlalchemy import select, text

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.storage import Library, keywords
from pixsearch.storage.annotations import set_caption
from pixsearch.storage.schema import ImageRow


@pytest.fixture
def library(tmp_path: Path, clip_spec: str) -> Library:
    write_folder(tmp_path / "photos", 3)
    library = Library.open(tmp_path / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    return library


def _found(library: Library, *words: str) -> list[int]:
    with library.session() as session:
        return [i for i, _ in keywords.search(session, keywords.KeywordQuery(any_of=words), 10)]


def test_only_a_persons_caption_is_indexed(library: Library) -> None:
    with library.session() as session:
        first, second = session.execute(select(ImageRow.id).order_by(ImageRow.id)).scalars().all()[:2]
        set_caption(session, first, "blip-caption:any", "a yellow kite over the dunes")
        set_caption(session, second, "person", "grandma's yellow kite")
    assert _found(library, "dunes") == []
    assert _found(library, "yellow") == [second]


def test_opening_an_old_library_drops_model_captions_from_its_keywords(library: Library, tmp_path: Path) -> None:
    with library.session() as session:
        first = session.execute(select(ImageRow.id).order_by(ImageRow.id)).scalars().first()
        set_caption(session, first, "blip-caption:any", "a yellow kite over the dunes")
        # the document as schema version 2 wrote it: the model's caption in it
        keywords.remove(session, [first])
        session.execute(
            text("INSERT INTO keywords (rowid, path, caption, tags, ocr, exif) VALUES (:i, 'x', :c, '', '', '')"),
            {"i": first, "c": "a yellow kite over the dunes"},
        )
        session.execute(text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    assert _found(library, "dunes") == [first]
    library.close()
    reopened = Library.open(tmp_path / "library")
    assert _found(reopened, "dunes") == []
