"""The result page's caption and question boxes with the native mPLUG backends (issue: mPLUG in the
product): the answers are those ModelScope's own pipelines gave on the conformance checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.settings import Settings
from pixsearch.storage import Library
from pixsearch.web import WebOptions, create_app

FIXTURES = Path(
    os.environ.get("PIXSEARCH_FIXTURES", Path(__file__).resolve().parents[2].parent / "shared" / "fixtures")
)
NAMES = ["red_circle.png", "blue_square.png", "green_triangle.png"]  # the fixtures' image order


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, clip_spec: str):
    mplug = FIXTURES / "mplug"
    if not mplug.is_dir():
        pytest.skip(f"conformance fixtures folder absent: {mplug}")
    root = tmp_path_factory.mktemp("native-web")
    shutil.copytree(FIXTURES / "images", root / "photos")
    library = Library.open(root / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([root / "photos"])
    options = WebOptions(
        captioner=f"mplug-caption:{mplug / 'image-captioning'}",
        answerer=f"mplug-vqa:{mplug / 'visual-question-answering'}",
        cutoff_z=None,
        duplicate_threshold=None,
        keyword_weight=0.0,  # the index was made by a tiny random CLIP: its scores carry no relevance
    )
    with TestClient(create_app(Settings(library=root / "library"), options)) as client:
        yield client


def _ids(client: TestClient) -> dict[str, int]:
    hits = client.get("/api/search", params={"q": "shapes", "k": 3}).json()["hits"]
    return {Path(h["path"]).name: h["id"] for h in hits}


def test_captions_and_answers_match_modelscope(client: TestClient) -> None:
    manifest = json.loads((FIXTURES / "mplug" / "manifest.json").read_text())
    texts = json.loads((FIXTURES / "inputs.json").read_text())["texts"]
    ids = _ids(client)
    for result in manifest["tasks"]["image-captioning"]["pipeline_results"]:
        response = client.post(f"/api/images/{ids[NAMES[result['image']]]}/caption")
        assert response.status_code == 200, response.text
        assert response.json()["caption"] == result["output"]["caption"]
    for result in manifest["tasks"]["visual-question-answering"]["pipeline_results"][:4]:
        question = texts[result["text"]]
        response = client.post(f"/api/images/{ids[NAMES[result['image']]]}/ask", json={"question": question})
        assert response.status_code == 200, response.text
        assert response.json()["answers"][0]["answer"] == result["output"]["text"]
