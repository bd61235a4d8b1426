"""VLE's patch-box head in the web app: GET /api/images/{id}/heatmap and the result page box."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import Role, create
from pixsearch.rerank.heatmap import heatmap_overlay
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.web import WebOptions, create_app

FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, clip_spec: str):
    pbc = FIXTURES / "vle" / "vle-pbc"
    if not pbc.is_dir():
        pytest.skip(f"conformance fixtures folder absent: {pbc}")
    root = tmp_path_factory.mktemp("heatmap")
    shutil.copytree(FIXTURES / "images", root / "photos")
    Indexer(Library.open(root / "library"), create(clip_spec), IndexOptions(workers=0)).run([root / "photos"])
    spec = f"vle-pbc:{pbc}"
    with TestClient(
        create_app(
            Settings(library=root / "library"),
            WebOptions(patch_scorer=spec, cutoff_z=None, duplicate_threshold=None, keyword_weight=0.0),
        )
    ) as client:
        yield client, spec, root / "photos"


def test_heatmap_png_is_the_overlay_of_the_patch_scores(setup) -> None:
    client, spec, photos = setup
    hit = client.get("/api/search", params={"q": "shapes", "k": 1}).json()["hits"][0]
    response = client.get(f"/api/images/{hit['id']}/heatmap", params={"q": "a red circle"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(hit["path"]).convert("RGB")
    scores = create(spec, Role.PATCH_SCORER).patch_scores(image, "a red circle")
    expected = np.asarray(heatmap_overlay(image, scores), dtype=int)
    got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=int)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1


def test_heatmap_needs_words_and_a_known_image(setup) -> None:
    client, _, _ = setup
    assert client.get("/api/images/1/heatmap").status_code == 422
    missing = client.get("/api/images/999999/heatmap", params={"q": "dog"})
    assert missing.status_code == 404 and "detail" in missing.json()


def test_result_page_shows_the_box_only_when_configured(setup, tmp_path: Path) -> None:
    client, _, _ = setup
    assert 'id="heatmap-form"' in client.get("/images/1").text
    assert client.get("/api/health").json()["patch_scorer"].startswith("vle-pbc:")


def test_without_a_patch_scorer_the_endpoint_says_so(tmp_path: Path, clip_spec: str) -> None:
    from images import write_folder

    write_folder(tmp_path / "photos", 2)
    Indexer(Library.open(tmp_path / "library"), create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    with TestClient(create_app(Settings(library=tmp_path / "library"))) as client:
        response = client.get("/api/images/1/heatmap", params={"q": "dog"})
        assert 400 <= response.status_code < 600 and response.status_code != 500
        assert "patch scorer" in response.json()["detail"]
        assert 'id="heatmap-form"' not in client.get("/images/1").text
