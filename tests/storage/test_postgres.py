"""The main flows on PostgreSQL. Needs a server: PIXSEARCH_TEST_POSTGRES_URL names a role that may
create databases (`.ci/run` starts Debian's PostgreSQL and sets it); each test gets a fresh database."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from images import write_folder
from sqlalchemy import create_engine, select, text

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.storage import IMAGES, Library
from pixsearch.storage.annotations import set_ocr_text, set_tag_state
from pixsearch.storage.schema import ImageRow
from pixsearch.storage.status import library_status

ADMIN_URL = os.environ.get("PIXSEARCH_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="PIXSEARCH_TEST_POSTGRES_URL is not set (no PostgreSQL server)")
EVERYTHING = SearchOptions(cutoff_z=None, duplicate_threshold=None)


@pytest.fixture
def pg_url():
    name = f"pixsearch_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_index_incrementally_and_search(pg_url: str, tmp_path: Path, clip_spec: str) -> None:
    folder = tmp_path / "photos"
    paths = write_folder(folder, 6)
    library = Library.open(tmp_path / "library", pg_url)
    encoder = create(clip_spec)
    assert Indexer(library, encoder, IndexOptions(workers=0, batch_size=4)).run([folder]).embedded == 6
    shutil.move(paths[0], folder / "moved.png")
    paths[1].unlink()
    report = Indexer(library, encoder, IndexOptions(workers=0)).run([folder])
    assert (report.moved, report.removed, report.embedded) == (1, 1, 0)
    service = SearchService(library)
    hits = service.text_to_image("red", k=10)
    assert len(hits) == 5 and "moved.png" in {Path(h.path).name for h in hits}
    with library.session() as session:
        model = library.active_model(session)
    assert sorted(library.load_index(IMAGES, model).ids().tolist()) == sorted(
        library.rebuild_index(IMAGES, model, persist=False).ids().tolist()
    )
    status = library_status(library)
    assert status.images == 5 and status.database.startswith("postgresql") and ":pixsearch@" not in status.database


def test_keywords_tags_and_filters(pg_url: str, tmp_path: Path, clip_spec: str) -> None:
    write_folder(tmp_path / "photos" / "beach_2020", 3)
    write_folder(tmp_path / "photos" / "home", 3, start=3)
    library = Library.open(tmp_path / "library", pg_url)
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    with library.session() as session:
        ids = {Path(p).name: i for p, i in session.execute(select(ImageRow.path, ImageRow.id))}
        set_tag_state(session, ids["img_0003.png"], "birthday cake", "confirmed")
        set_ocr_text(session, ids["img_0004.png"], "EXIT 24 Springfield", "rapidocr")
    service = SearchService(library)

    def names(query: str) -> list[str]:
        return sorted(Path(h.path).name for h in hybrid_search(service, query, k=10, options=EVERYTHING).hits)

    assert names('"birthday cake"') == ["img_0003.png"]
    assert names('"exit 24"') == ["img_0004.png"]
    assert names("tag:birthday_cake") == ["img_0003.png"]
    assert names("folder:beach_2020") == ["img_0000.png", "img_0001.png", "img_0002.png"]
    assert "img_0004.png" not in names("shapes -springfield")
