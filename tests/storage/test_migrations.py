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
