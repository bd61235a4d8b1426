from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from pixsearch.errors import LibraryError
from pixsearch.storage import Library, migrations
from pixsearch.storage.schema import SCHEMA_VERSION


def _set_version(library: Library, version: int) -> None:
    with library.session() as session:
        session.execute(text("update meta set value = :v where key = 'schema_version'"), {"v": str(version)})


def test_new_library_is_at_the_current_version(tmp_path: Path) -> None:
    library = Library.open(tmp_path / "lib")
    with library._engine.connect() as connection:
        assert migrations.schema_version(connection) == SCHEMA_VERSION
    with library.session() as session:
        assert session.execute(text("pragma journal_mode")).scalar() == "wal"


def test_newer_database_is_refused(tmp_path: Path) -> None:
    library = Library.open(tmp_path / "lib")
    _set_version(library, SCHEMA_VERSION + 1)
    library.close()
    with pytest.raises(LibraryError, match="newer"):
        Library.open(tmp_path / "lib")


def test_older_database_is_migrated_step_by_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    library = Library.open(tmp_path / "lib")
    _set_version(library, SCHEMA_VERSION - 1)
    library.close()
    ran = []
    monkeypatch.setitem(migrations.MIGRATIONS, SCHEMA_VERSION - 1, lambda connection: ran.append(connection))
    reopened = Library.open(tmp_path / "lib")
    assert len(ran) == 1
    with reopened._engine.connect() as connection:
        assert migrations.schema_version(connection) == SCHEMA_VERSION


def test_missing_migration_is_an_error(tmp_path: Path) -> None:
    library = Library.open(tmp_path / "lib")
    _set_version(library, 0)
    library.close()
    with pytest.raises(LibraryError, match="no migration"):
        Library.open(tmp_path / "lib")


def test_version_1_library_gains_tags_and_keywords(tmp_path: Path) -> None:
    from datetime import datetime

    from pixsearch.storage import keywords
    from pixsearch.storage.schema import ImageRow

    library = Library.open(tmp_path / "lib")
    with library.session() as session:
        session.add(
            ImageRow(
                path="/photos/beach/sunset.jpg",
                content_hash="h",
                size=1,
                mtime=0.0,
                width=1,
                height=1,
                indexed_at=datetime.now(),
            )
        )
        session.execute(text("DROP TABLE keywords"))
        for table in ("tags", "ocr_texts", "captions"):
            session.execute(text(f"DROP TABLE {table}"))
    _set_version(library, 1)
    library.close()
    upgraded = Library.open(tmp_path / "lib")
    with upgraded.session() as session:
        found = keywords.search(session, keywords.KeywordQuery(include=("sunset",)), 5)
        assert [image_id for image_id, _ in found] == [1]
        session.execute(text("select count(*) from tags")).scalar_one()
