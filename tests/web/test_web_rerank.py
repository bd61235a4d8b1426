"""Deferred reranking: first-stage results at once with a token, POST /api/rerank reorders that result set."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from pixsearch.models import Role, create
from pixsearch.photos import load_photo
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.storage import Library

QUERY = "a red circle"


@pytest.fixture(scope="module")
def reranker(tiny_blip_dirs, library_dir: Path) -> RerankService:
    """A real reranker (tiny BLIP ITM) over the web tests' library; ITM alone orders its top 6."""
    spec = f"blip-itm:{tiny_blip_dirs['itm']}"
    library = Library.open(library_dir)
    options = RerankOptions(k=6, fusion=Fusion.ITM)
    return RerankService(
        create(spec, Role.RERANKER), spec, library_dir, options, functools.partial(load_photo, library)
    )


def _ids(body: dict) -> list[int]:
    return [hit["id"] for hit in body["hits"]]


def test_deferred_rerank_answers_first_stage_then_the_same_photos_reranked(make_client, reranker) -> None:
    calls = []

    def hook(query, hits):
        calls.append([hit.image_id for hit in hits])
        return reranker.rerank_images(query, hits)

    client = make_client(rerank_hook=hook)
    plain = client.get("/api/search", params={"q": QUERY, "k": 10}).json()
    first = client.get("/api/search", params={"q": QUERY, "k": 10, "rerank": True, "defer_rerank": True}).json()
    assert first["reranked"] is False and calls == [] and _ids(first) == _ids(plain)
    assert all(hit["rerank_score"] is None for hit in first["hits"])
    token = first["rerank_token"]
    assert token

    second = client.post("/api/rerank", json={"token": token})
    assert second.status_code == 200
    body = second.json()
    assert calls == [_ids(plain)] and body["reranked"] is True and body["rerank_token"] is None
    assert sorted(_ids(body)) == sorted(_ids(plain)) and body["k"] == 10 and body["query"] == QUERY
    scores = [hit["rerank_score"] for hit in body["hits"][:6]]
    assert None not in scores and scores == sorted(scores, reverse=True)  # ITM alone orders the top 6
    assert _ids(body)[6:] == _ids(plain)[6:]  # below the top k, the first-stage order stays
    assert _ids(body) != _ids(plain), "the tiny reranker should disagree with the first stage here"
    again = client.post("/api/rerank", json={"token": token}).json()
    assert _ids(again) == _ids(body)  # the result set stays available; its caches make this cheap


def test_without_defer_the_search_reranks_at_once(make_client, reranker) -> None:
    client = make_client(rerank_hook=reranker.rerank_images)
    body = client.get("/api/search", params={"q": QUERY, "k": 8, "rerank": True}).json()
    assert body["reranked"] is True and body["rerank_token"] is None
    assert body["hits"][0]["rerank_score"] is not None


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"token": "never-issued"}, 404, "expired"),
        ({}, 422, "token"),
        ({"token": ""}, 422, "token"),
        ({"token": "x", "extra": 1}, 422, "extra"),
    ],
)
def test_bad_rerank_requests_get_a_one_line_reason(make_client, reranker, payload, status, words) -> None:
    response = make_client(rerank_hook=reranker.rerank_images).post("/api/rerank", json=payload)
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_no_token_without_a_reranker_or_for_a_photo(client, make_client, reranker, png_bytes) -> None:
    body = client.get("/api/search", params={"q": QUERY, "rerank": True, "defer_rerank": True}).json()
    assert body["rerank_token"] is None and any("no reranker" in note for note in body["notes"])
    with_reranker = make_client(rerank_hook=reranker.rerank_images)
    photo = with_reranker.post(
        "/api/search",
        files={"image": ("q.png", png_bytes(3), "image/png")},
        data={"rerank": "true", "defer_rerank": "true"},
    ).json()
    assert photo["rerank_token"] is None and any("words-only" in note for note in photo["notes"])


def test_the_page_shows_first_stage_results_with_a_pending_rerank(make_client, reranker) -> None:
    client = make_client(rerank_hook=reranker.rerank_images)
    plain = client.get("/api/search", params={"q": QUERY, "k": 12}).json()
    html = client.get("/", params={"q": QUERY, "k": 12, "rerank": "true"}).text
    assert 'id="rerank-status"' in html and "Reranking" in html
    assert [int(i) for i in re.findall(r'<li class="result" data-id="(\d+)"', html)] == _ids(plain)
    token = re.search(r'data-rerank-token="([^"]+)"', html).group(1)
    assert re.search(r'data-rerank-url="/api/rerank"', html)
    assert client.post("/api/rerank", json={"token": token}).json()["reranked"] is True
