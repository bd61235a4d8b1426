from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pixsearch.errors import ConfigError, NotFoundError
from pixsearch.storage import Library, keywords
from pixsearch.storage.annotations import (
    caption_of,
    ocr_text_of,
    set_caption,
    set_ocr_text,
    set_tag_state,
    suggest_tags,
    tags_of,
)
from pixsearch.storage.schema import ImageRow


@pytest.fixture
def library(tmp_path: Path) -> Library:
    library = Library.open(tmp_path / "lib")
    with library.session() as session:
        session.add(
            ImageRow(path="/p/a.jpg", content_hash="h1", size=1, mtime=0, width=1, height=1, indexed_at=datetime.now())
        )
    return library


def _names(library: Library) -> dict[str, str]:
    with library.session() as session:
        return {t.name: t.state for t in tags_of(session, 1)}


def _found(library: Library, word: str) -> bool:
    with library.session() as session:
        return bool(keywords.search(session, keywords.KeywordQuery(include=(word,)), 5))


def test_model_suggestions_replace_their_own_but_never_a_persons(library: Library) -> None:
    with library.session() as session:
        suggest_tags(session, 1, [("Beach", 0.9), ("dog", 0.4)], "zero-shot")
    assert _names(library) == {"Beach": "suggested", "dog": "suggested"}  # as the vocabulary spells it
    with library.session() as session:
        set_tag_state(session, 1, "dog", "confirmed")
        set_tag_state(session, 1, "beach", "rejected")
        set_tag_state(session, 1, "holiday  2020", "confirmed")
        suggest_tags(session, 1, [("beach", 0.95), ("cat", 0.5)], "zero-shot")  # a later model run
    assert _names(library) == {"dog": "confirmed", "holiday 2020": "confirmed", "cat": "suggested"}
    assert _found(library, "holiday") and _found(library, "cat") and not _found(library, "beach")


def test_ocr_and_a_persons_caption_are_searchable(library: Library) -> None:
    with library.session() as session:
        set_ocr_text(session, 1, "EXIT 24 Springfield", "rapidocr")
        set_caption(session, 1, "blip-caption:x", "a yellow road sign")
        set_caption(session, 1, "person", "grandma's green gate")
        assert ocr_text_of(session, 1) == "EXIT 24 Springfield"
        assert caption_of(session, 1, "blip-caption:x") == "a yellow road sign"
    assert _found(library, "springfield") and _found(library, "green gate")
    assert not _found(library, "yellow road")  # a model's caption is shown, not keyword-indexed


def test_caption_of_changed_bytes_is_stale(library: Library) -> None:
    with library.session() as session:
        set_caption(session, 1, "blip-caption:x", "old")
        session.get(ImageRow, 1).content_hash = "h2"
        assert caption_of(session, 1, "blip-caption:x") is None


def test_bad_tags_and_unknown_images(library: Library) -> None:
    with library.session() as session, pytest.raises(ConfigError, match="empty"):
        set_tag_state(session, 1, "   ", "confirmed")
    with library.session() as session, pytest.raises(NotFoundError):
        suggest_tags(session, 99, [("x", 1.0)], "m")
    with library.session() as session, pytest.raises(ConfigError):
        set_tag_state(session, 1, "x", "suggested")


def test_keyword_query_is_never_fts_syntax(library: Library) -> None:
    with library.session() as session:
        for text in ['a" OR "b', "NEAR(", "*", "-x", "col:value"]:
            keywords.search(session, keywords.KeywordQuery(include=(text,)), 5)  # no syntax error
