"""A running server follows the library: photos indexed, or a whole re-index with another model,
by another writer while it serves are searchable at once, without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import PHOTOS
from images import write_folder

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.storage import Library

ALL = PHOTOS + 2


def _index(library_root: Path, spec: str, folders: list[Path], reindex: bool = False) -> None:
    library = Library.open(library_root)
    try:
        Indexer(library, create(spec), IndexOptions(workers=0, reindex=reindex)).run(folders)
    finally:
        library.close()


def _count(client) -> int:
    response = client.get("/api/search", params={"q": "shapes", "k": 1000})
    assert response.status_code == 200, response.text
    return len(response.json()["hits"])


def test_new_photos_are_found_without_a_restart(make_client, fresh_library, photos, clip_spec, tmp_path) -> None:
    client = make_client(library=fresh_library)
    assert _count(client) == ALL
    write_folder(tmp_path / "more", 3, start=500)
    _index(fresh_library, clip_spec, [tmp_path / "more"])
    assert _count(client) == ALL + 3


def test_a_reindex_with_another_model_is_served_without_a_restart(
    make_client, fresh_library, photos, clip_spec, image_ids, tmp_path
) -> None:
    client = make_client(library=fresh_library)
    assert _count(client) == ALL
    other = tmp_path / "clip-b"
    shutil.copytree(clip_spec.split(":", 1)[1], other)
    _index(fresh_library, f"clip:{other}", [photos], reindex=True)
    assert client.get("/api/health").json()["model"] == f"clip:{other}"
    assert _count(client) == ALL
    like = client.get("/api/search", params={"like": image_ids["img_0005.png"], "k": 4})
    assert like.status_code == 200 and len(like.json()["hits"]) == 4
