"""Every route that opens a library file opens only regular files below the library's photo folders,
checked at request time, through no link: a photo swapped for a link, a FIFO or a folder link is refused."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from fakes import FAKE_SPECS, install_fakes
from images import draw
from sqlalchemy import delete, select

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.storage import Library
from pixsearch.storage.schema import ImageRow, Meta

SECRET = b"root:x:0:0:root:/root:/bin/bash\n"


@pytest.fixture
def library(tmp_path: Path, clip_spec: str) -> dict:
    """A library over photos/ (s0.jpg, s1.jpg, sub/s2.jpg) and a secret file outside it."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for seed, name in enumerate(("s0.jpg", "s1.jpg", "sub/s2.jpg")):
        draw(seed, (80, 60)).save(photos / name, "JPEG")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd").write_bytes(SECRET)
    root = tmp_path / "library"
    lib = Library.open(root)
    Indexer(lib, create(clip_spec), IndexOptions(workers=0)).run([photos])
    with lib.session() as session:
        ids = {
            Path(path).relative_to(photos).as_posix(): i
            for i, path in session.execute(select(ImageRow.id, ImageRow.path))
        }
    lib.close()
    return {"root": root, "photos": photos, "secret": secret / "passwd", "ids": ids}


@pytest.fixture
def served(make_client, library):
    """A client over the library with fake models in every role, and the fakes."""
    client = make_client(library=library["root"], thumbnail_size=32, **FAKE_SPECS)
    fakes = install_fakes(client.app)
    return client, fakes


# every route that opens the photo's file: (method, path under /api/images/{id}, JSON body)
ROUTES = [
    ("GET", "file", None),
    ("GET", "thumbnail", None),
    ("GET", "thumbnail?size=large", None),
    ("POST", "caption", {}),
    ("POST", "ask", {"question": "what is it?"}),
    ("POST", "entail", {"statement": "a drawing"}),
    ("GET", "heatmap?q=circle", None),
]


def call(client, method: str, image_id: int, route: str, body):
    return client.request(method, f"/api/images/{image_id}/{route}", json=body)


def test_normal_files_serve_on_every_route(served, library) -> None:
    client, fakes = served
    image_id = library["ids"]["sub/s2.jpg"]
    for method, route, body in ROUTES:
        response = call(client, method, image_id, route, body)
        assert response.status_code == 200, (route, response.text)
    assert fakes.seen == [(80, 60)] * 4
    original = client.get(f"/api/images/{image_id}/file")
    assert original.content == (library["photos"] / "sub" / "s2.jpg").read_bytes()
    assert original.headers["content-type"] == "image/jpeg"
    assert original.headers["content-length"] == str(len(original.content))
    assert original.headers["x-content-type-options"] == "nosniff"
    assert 'filename="s2.jpg"' in original.headers["content-disposition"]


def _refused(response, words: str) -> None:
    assert response.status_code == 404, response.text
    detail = response.json()["detail"]
    assert words in detail
    assert b"root:" not in response.content and "/secret" not in detail  # nothing of the link's target


@pytest.mark.parametrize("method, route, body", ROUTES)
def test_a_photo_swapped_for_a_link_is_refused(served, library, method, route, body) -> None:
    client, fakes = served
    photo = library["photos"] / "s0.jpg"
    photo.unlink()
    photo.symlink_to(library["secret"])
    _refused(call(client, method, library["ids"]["s0.jpg"], route, body), "link")
    assert fakes.seen == []


@pytest.mark.parametrize("method, route, body", ROUTES)
def test_a_link_to_another_library_photo_is_refused_too(served, library, method, route, body) -> None:
    client, fakes = served
    photo = library["photos"] / "s0.jpg"
    photo.unlink()
    photo.symlink_to(library["photos"] / "s1.jpg")
    _refused(call(client, method, library["ids"]["s0.jpg"], route, body), "link")
    assert fakes.seen == []


@pytest.mark.parametrize("method, route, body", ROUTES)
def test_a_folder_swapped_for_a_link_is_refused(served, library, method, route, body) -> None:
    client, fakes = served
    elsewhere = library["secret"].parent / "sub"
    elsewhere.mkdir()
    shutil.copy(library["secret"], elsewhere / "s2.jpg")
    shutil.rmtree(library["photos"] / "sub")
    (library["photos"] / "sub").symlink_to(elsewhere)
    _refused(call(client, method, library["ids"]["sub/s2.jpg"], route, body), "link")
    assert fakes.seen == []


@pytest.mark.parametrize("method, route, body", ROUTES)
def test_a_fifo_swapped_in_is_refused_without_hanging(served, library, method, route, body) -> None:
    client, fakes = served
    photo = library["photos"] / "s1.jpg"
    photo.unlink()
    os.mkfifo(photo)
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.update(r=call(client, method, library["ids"]["s1.jpg"], route, body)), daemon=True
    )
    worker.start()
    worker.join(30)
    assert "r" in result, "the request hung on a FIFO"
    _refused(result["r"], "FIFO")
    assert fakes.seen == []


def test_a_cached_thumbnail_is_not_served_once_its_photo_is_a_link(served, library) -> None:
    client, _ = served
    image_id = library["ids"]["s0.jpg"]
    assert client.get(f"/api/images/{image_id}/thumbnail").status_code == 200
    photo = library["photos"] / "s0.jpg"
    photo.unlink()
    photo.symlink_to(library["secret"])
    _refused(client.get(f"/api/images/{image_id}/thumbnail"), "link")


def test_a_file_moved_outside_the_photo_folders_is_refused(served, library, tmp_path) -> None:
    client, _ = served
    outside = tmp_path / "outside.jpg"
    shutil.copy(library["photos"] / "s1.jpg", outside)
    lib = Library.open(library["root"])
    with lib.session() as session:
        session.get(ImageRow, library["ids"]["s1.jpg"]).path = str(outside)
    lib.close()
    _refused(client.get(f"/api/images/{library['ids']['s1.jpg']}/file"), "outside the library's photo folders")


def test_a_library_without_recorded_folders_serves_no_files(served, library) -> None:
    client, fakes = served
    lib = Library.open(library["root"])
    with lib.session() as session:
        session.execute(delete(Meta).where(Meta.key == "photo_roots"))
    lib.close()
    for method, route, body in ROUTES:
        _refused(call(client, method, library["ids"]["s1.jpg"], route, body), "pixsearch index")
    assert fakes.seen == []
