"""Keyword ranking with a window: a word found in more photos than the window ranks the most recently
indexed of them (its cost stays bounded at any library size); rarer words are ranked in full, and the
photos a -word excludes are all of its matches. SQLite, and PostgreSQL where a server is given."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pixsearch.storage import Library, keywords
from pixsearch.storage.schema import ImageRow

ADMIN_URL = os.environ.get("PIXSEARCH_TEST_POSTGRES_URL")
PATHS = {i: f"/photos/beach/shot_{i}.jpg" for i in range(1, 9)} | {
    2: "/photos/beach/beach_beach_2.jpg",  # the word three times: the best match of all
    1: "/photos/beach/lighthouse_1.jpg",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def library(request, tmp_path: Path):
    url = None
    if request.param == "postgresql":
        if not ADMIN_URL:
            pytest.skip("PIXSEARCH_TEST_POSTGRES_URL is not set (no PostgreSQL server)")
        name = f"pixsearch_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    library = Library.open(tmp_path / "library", url)
    with library.session() as session:
        for image_id, path in sorted(PATHS.items()):
            session.add(ImageRow(id=image_id, path=path, content_hash=f"{image_id:064x}", size=1, mtime=0.0,
                                 width=8, height=8, indexed_at=datetime(2024, 1, 1)))  # fmt: skip
        session.flush()
        keywords.refresh(session, list(PATHS))
    yield library
    library.close()
    if url:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _ranked(library: Library, word: str, window: int | None) -> list[int]:
    with library.session() as session:
        return [i for i, _ in keywords.search(session, keywords.KeywordQuery(any_of=(word,)), 10, window=window)]


def test_a_common_word_ranks_the_most_recently_indexed_matches_within_the_window(library: Library) -> None:
    everything = _ranked(library, "beach", None)
    assert everything[0] == 2 and sorted(everything) == list(range(1, 9))
    assert sorted(_ranked(library, "beach", 4)) == [5, 6, 7, 8]  # photo 2, the best match, is outside it
    assert _ranked(library, "beach", 8) == everything


def test_a_rare_word_is_ranked_in_full_whatever_the_window(library: Library) -> None:
    assert _ranked(library, "lighthouse", 4) == [1]  # the oldest photo, but the word's only match


def test_an_excluded_word_names_every_photo_it_matches(library: Library) -> None:
    with library.session() as session:
        assert keywords.matching_ids(session, keywords.KeywordQuery(any_of=("beach",))) == set(range(1, 9))
        assert keywords.matching_ids(session, keywords.KeywordQuery(any_of=("lighthouse", "beach"))) == set(range(1, 9))
        assert keywords.matching_ids(session, keywords.KeywordQuery(any_of=("volcano",))) == set()
