"""The main flows on PostgreSQL. Needs a server: PIXSEARCH_TEST_POSTGRES_URL names a role that may
create databases (`.ci/run` starts Debian's PostgreSQL and sets it); each test gets a fresh database."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from images import write_folder
from sqlalchemy import create_engine, select, text

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.settings import Settings
from pixsearch.storage import IMAGES, Library, keywords
from pixsearch.storage.annotations import set_caption, set_ocr_text, set_tag_state, suggest_tags, tags_of
from pixsearch.storage.schema import ImageRow
from pixsearch.storage.status import library_status
from pixsearch.web import WebOptions, create_app

ADMIN_URL = os.environ.get("PIXSEARCH_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not ADMIN_URL, reason="PIXSEARCH_TEST_POSTGRES_URL is not set (no PostgreSQL server)")
EVERYTHING = SearchOptions(cutoff_z=None, duplicate_threshold=None)
KEY = "correct-horse-battery"


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


@pytest.fixture
def tagged(pg_url: str, tmp_path: Path, clip_spec: str) -> tuple[Path, dict[str, int]]:
    """A PostgreSQL library of 4 photos; img_0001 tagged 'red circle', img_0002 reads 'blue square'."""
    write_folder(tmp_path / "photos", 4)
    library = Library.open(tmp_path / "library", pg_url)
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    with library.session() as session:
        ids = {Path(p).name: i for p, i in session.execute(select(ImageRow.path, ImageRow.id))}
        set_tag_state(session, ids["img_0001.png"], "red circle", "confirmed")
        set_ocr_text(session, ids["img_0002.png"], "blue square", "rapidocr")
    library.close()
    return tmp_path / "library", ids


def test_several_words_phrases_and_exclusions(pg_url: str, tagged) -> None:
    root, ids = tagged
    library = Library.open(root, pg_url)
    with library.session() as session:

        def found(**query) -> list[int]:
            return [i for i, _ in keywords.search(session, keywords.KeywordQuery(**query), 10)]

        assert found(any_of=("red", "circle"))[0] == ids["img_0001.png"]
        assert set(found(any_of=("circle", "square"))) == {ids["img_0001.png"], ids["img_0002.png"]}
        assert found(include=("red circle", "img 0001")) == [ids["img_0001.png"]]
        assert found(include=("red circle", "blue square")) == []
        assert found(any_of=("circle", "square"), exclude=("red", "nothing")) == [ids["img_0002.png"]]
    library.close()


def test_multi_word_search_through_the_web_api(pg_url: str, tagged) -> None:
    root, ids = tagged
    options = WebOptions(cutoff_z=None, duplicate_threshold=None, api_key=KEY)
    with TestClient(create_app(Settings(library=root, db_url=pg_url), options)) as client:
        for query in ("red circle", '"red circle" "img 0001"', "circle square -red -blue", "shapes tag:red_circle"):
            response = client.get("/api/search", params={"q": query, "k": 10})
            assert response.status_code == 200, (query, response.text)
        hits = client.get("/api/search", params={"q": "red circle", "k": 10}).json()["hits"]
        assert hits[0]["id"] == ids["img_0001.png"]
        excluded = client.get("/api/search", params={"q": "shapes -red -blue", "k": 10}).json()["hits"]
        assert {h["id"] for h in excluded} == {ids["img_0000.png"], ids["img_0003.png"]}
        form = client.post("/api/search", data={"text": "blue square", "k": "10"})
        assert form.status_code == 200 and form.json()["hits"][0]["id"] == ids["img_0002.png"]


def test_nul_in_tags_captions_and_queries_is_a_422_naming_the_field(pg_url: str, tagged) -> None:
    root, ids = tagged
    image_id = ids["img_0003.png"]
    auth = {"X-API-Key": KEY}
    options = WebOptions(cutoff_z=None, duplicate_threshold=None, api_key=KEY)
    with TestClient(create_app(Settings(library=root, db_url=pg_url), options)) as client:
        tag = client.post(f"/api/images/{image_id}/tags", json={"name": "bad\x00tag"}, headers=auth)
        assert tag.status_code == 422 and "name" in tag.json()["detail"] and "NUL" in tag.json()["detail"]
        gone = client.delete(f"/api/images/{image_id}/tags/bad%00tag", headers=auth)
        assert gone.status_code == 422 and "name" in gone.json()["detail"]
        caption = client.post(f"/api/images/{image_id}/caption", json={"caption": "a\x00b"}, headers=auth)
        assert caption.status_code == 422 and "caption" in caption.json()["detail"]
        search = client.get("/api/search", params={"q": "red\x00circle"})
        assert search.status_code == 422 and "q" in search.json()["detail"]
        assert client.get(f"/api/images/{image_id}/tags").json()["tags"] == []


def test_nul_from_a_model_or_a_file_is_stripped_before_storing(pg_url: str, tagged) -> None:
    root, ids = tagged
    image_id = ids["img_0003.png"]
    library = Library.open(root, pg_url)
    with library.session() as session:
        suggest_tags(session, image_id, [("tri\x00angle", 0.5)], "xmp")
        set_caption(session, image_id, "person", "a green\x00 triangle")  # a person's caption: keyword-indexed
        set_ocr_text(session, image_id, "EXIT\x0024", "rapidocr")
        assert [t.name for t in tags_of(session, image_id)] == ["tri angle"]
        found = keywords.search(session, keywords.KeywordQuery(include=("green triangle", "exit 24")), 10)
        assert [i for i, _ in found] == [image_id]
        assert keywords.search(session, keywords.KeywordQuery(any_of=("tri\x00", "angle")), 10)[0][0] == image_id
    library.close()


def test_a_reader_catches_up_with_an_index_file_that_lags(pg_url: str, tmp_path: Path, clip_spec: str) -> None:
    """As on SQLite (tests/storage/test_index_types.py): between a writer's index saves a reader brings
    the file's index up to date in memory, here with PostgreSQL's ids."""
    import numpy as np

    from pixsearch.indexer import writer
    from pixsearch.indexer.decode import Prepared

    write_folder(tmp_path / "photos", 6)
    library = Library.open(tmp_path / "library", pg_url)
    encoder = create(clip_spec)
    Indexer(library, encoder, IndexOptions(workers=0)).run([tmp_path / "photos"])
    with library.session() as session:
        model = library.active_model(session)
    fresh = np.random.default_rng(0).standard_normal((2, model.dim)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    with library.writing("test"):
        index = library.load_index(IMAGES, model)
        mapped = index.mapped_file
        with library.session() as session:
            writer.delete_images(session, [1], index)
            index.generation = library.bump_generation(session, IMAGES, model.key)
        items = [Prepared(f"/new/{i}.jpg", f"{i:064x}", 1, 0.0, 64, 48, None, None, None) for i in range(2)]
        with library.session() as session:
            writer.store_embedded(session, items, fresh, model.key, index)
            index.generation = library.bump_generation(session, IMAGES, model.key)
        reader = library.load_index(IMAGES, model, persist=False)
        with library.session() as session:
            assert reader.digest() == library.vector_digest(session, IMAGES, model.key)
    assert reader.mapped_file == mapped is not None and len(reader) == 7
    assert SearchService(library).vector_to_image(fresh[1], 1)[0].path == "/new/1.jpg"
