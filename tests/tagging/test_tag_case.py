"""Tags keep the case a person typed and match case-insensitively; a library from before (schema 3)
gains the column that holds the typed form."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text

from pixsearch.search.filters import matching_ids
from pixsearch.search.query import parse_query
from pixsearch.storage import Library
from pixsearch.storage.annotations import set_tag_state, suggest_tags, tags_of
from pixsearch.storage.schema import SCHEMA_VERSION, ImageRow


def _first_id(library: Library) -> int:
    with library.session() as session:
        return session.execute(select(ImageRow.id).order_by(ImageRow.id)).scalars().first()


def test_the_typed_case_is_kept_and_matched_without_it(library_copy) -> None:
    library, _photos = library_copy()
    image_id = _first_id(library)
    with library.session() as session:
        suggest_tags(session, image_id, [("dog", 0.7)], "zero-shot:m")
        set_tag_state(session, image_id, "  Ünïcödé   Straße ", "confirmed")
        set_tag_state(session, image_id, "DOG", "confirmed")  # confirms the model's "dog": one tag, as typed
        assert [(t.name, t.state) for t in tags_of(session, image_id)] == [
            ("DOG", "confirmed"),
            ("Ünïcödé Straße", "confirmed"),
        ]
        suggest_tags(session, image_id, [("dog", 0.9)], "zero-shot:m")  # a model never renames a person's tag
        assert {t.name for t in tags_of(session, image_id)} == {"DOG", "Ünïcödé Straße"}
        for query in ("tag:ünïcödé_straße", "tag:ÜNÏCÖDÉ_STRAßE", "tag:dog"):
            assert matching_ids(session, parse_query(query).filters) == {image_id}, query
        set_tag_state(session, image_id, "ünïcödé straße", "rejected")  # removed in any case
        assert [t.name for t in tags_of(session, image_id)] == ["DOG"]


def test_a_schema_3_library_is_upgraded(library_copy) -> None:
    library, _photos = library_copy()
    image_id = _first_id(library)
    with library.session() as session:
        session.execute(text("ALTER TABLE tags DROP COLUMN label"))  # the tags table as schema 3 had it
        session.execute(
            text("INSERT INTO tags (image_id, name, source, score, state, updated_at) VALUES (:i, 'old tag', 'person', NULL, 'confirmed', '2024-01-01 00:00:00')"),
            {"i": image_id},
        )  # fmt: skip
        session.execute(text("UPDATE meta SET value = '3' WHERE key = 'schema_version'"))
    root = Path(library.root)
    library.close()
    upgraded = Library.open(root)
    try:
        with upgraded.session() as session:
            assert session.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar() == str(
                SCHEMA_VERSION
            )
            set_tag_state(session, image_id, "New Tag", "confirmed")
            assert {t.name for t in tags_of(session, image_id)} == {"old tag", "New Tag"}
    finally:
        upgraded.close()
