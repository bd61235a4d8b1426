"""GET and POST /api/search, and /api/health."""

from __future__ import annotations

import pytest
from conftest import PHOTOS

from pixsearch.search import ImageHit

ALL = PHOTOS + 2  # the drawn photos, a copy of the first, and the EXIF JPEG


def test_health_says_what_is_served(make_client, caption_spec) -> None:
    body = make_client(captioner=caption_spec, api_key="k" * 12).get("/api/health").json()
    assert body["status"] == "ok" and body["images"] == ALL
    assert body["model"].startswith("clip:") and body["captioner"] == caption_spec
    assert body["answerer"] is None and body["rerank_available"] is False
    assert body["writes_enabled"] is True


def test_text_search_returns_k_ranked_hits(client) -> None:
    response = client.get("/api/search", params={"q": "a red circle", "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "a red circle" and body["k"] == 5 and len(body["hits"]) == 5
    scores = [hit["score"] for hit in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    first = body["hits"][0]
    assert first["thumbnail_url"] == f"/api/images/{first['id']}/thumbnail"
    assert first["page_url"] == f"/images/{first['id']}"
    assert body["next_offset"] == 5 and body["reranked"] is False and body["no_good_match"] is False


def test_paging_continues_the_ranking(client) -> None:
    full = client.get("/api/search", params={"q": "shapes", "k": 10}).json()["hits"]
    page = client.get("/api/search", params={"q": "shapes", "k": 5, "offset": 5}).json()
    assert [h["id"] for h in page["hits"]] == [h["id"] for h in full[5:10]]
    last = client.get("/api/search", params={"q": "shapes", "k": 10, "offset": ALL - 3}).json()
    assert len(last["hits"]) == 3 and last["next_offset"] is None


def test_more_like_this_excludes_the_image(client, image_ids) -> None:
    image_id = image_ids["img_0005.png"]
    body = client.get("/api/search", params={"like": image_id, "k": 4}).json()
    assert body["like"] == image_id and len(body["hits"]) == 4
    assert image_id not in {hit["id"] for hit in body["hits"]}


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"q": "dog", "k": 0}, 422, "k"),
        ({"q": "dog", "k": 1001}, 422, "k"),
        ({"q": "dog", "offset": -1}, 422, "offset"),
        ({"q": "dog", "offset": 100_001}, 422, "offset"),
        ({"q": "dog", "k": "ten"}, 422, "integer"),
        ({"q": "x" * 501}, 422, "500"),
        ({}, 400, "give some words"),
        ({"q": "   "}, 400, "give some words"),
        ({"like": 10**9}, 404, "not in the library"),
        ({"like": "abc"}, 422, "like"),
        ({"like": 0}, 422, "like"),
    ],
)
def test_bad_search_requests_get_a_one_line_reason(client, params, status, words) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail


def test_rerank_without_a_reranker_is_ignored_and_said(client) -> None:
    plain = client.get("/api/search", params={"q": "circle", "k": 5}).json()
    body = client.get("/api/search", params={"q": "circle", "k": 5, "rerank": "true"}).json()
    assert body["reranked"] is False and any("no reranker" in note for note in body["notes"])
    assert [h["id"] for h in body["hits"]] == [h["id"] for h in plain["hits"]]


def test_rerank_hook_reorders_a_words_query(make_client) -> None:
    calls: list[tuple[str, int]] = []

    def reverse(query: str, hits: list[ImageHit]) -> list[ImageHit]:
        calls.append((query, len(hits)))
        return hits[::-1]

    client = make_client(rerank_hook=reverse)
    plain = client.get("/api/search", params={"q": "circle", "k": 5}).json()
    body = client.get("/api/search", params={"q": "circle", "k": 5, "rerank": True}).json()
    assert body["reranked"] is True and calls == [("circle", 5)]
    assert [h["id"] for h in body["hits"]] == [h["id"] for h in plain["hits"]][::-1]
    assert client.get("/api/health").json()["rerank_available"] is True


def test_min_score_gives_the_no_good_match_state(make_client) -> None:
    body = make_client(min_score=0.99).get("/api/search", params={"q": "a red circle", "k": 5}).json()
    assert body["no_good_match"] is True and body["hits"] == [] and body["min_score"] == 0.99
    assert body["best_score"] is not None and body["best_score"] < 0.99
    assert body["next_offset"] is None and "cut-off" in body["notes"][0]
    low = make_client(min_score=-1.0).get("/api/search", params={"q": "a red circle", "k": 5}).json()
    assert low["no_good_match"] is False and len(low["hits"]) == 5


def test_post_a_photo_finds_itself_first(client, image_ids, png_bytes) -> None:
    response = client.post("/api/search", files={"image": ("q.png", png_bytes(7), "image/png")}, data={"k": "3"})
    assert response.status_code == 200
    hits = response.json()["hits"]
    assert hits[0]["id"] == image_ids["img_0007.png"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_post_words_and_photo_together(client, png_bytes) -> None:
    both = client.post(
        "/api/search", files={"image": ("q.png", png_bytes(3), "image/png")}, data={"text": "red", "k": "4"}
    ).json()
    words = client.post("/api/search", data={"text": "red", "k": "4"}).json()
    assert both["query"] == "red" and len(both["hits"]) == 4
    assert [h["score"] for h in both["hits"]] != [h["score"] for h in words["hits"]]


def test_post_rerank_of_a_photo_query_is_ignored_and_said(make_client, png_bytes) -> None:
    client = make_client(rerank_hook=lambda query, hits: hits[::-1])
    body = client.post(
        "/api/search", files={"image": ("q.png", png_bytes(3), "image/png")}, data={"rerank": "true"}
    ).json()
    assert body["reranked"] is False and any("words-only" in note for note in body["notes"])


@pytest.mark.parametrize(
    "files, data, status, words",
    [
        ({"image": ("q.png", b"not an image at all", "image/png")}, {}, 422, "not an image"),
        ({"image": ("q.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64, "image/jpeg")}, {}, 422, "q.jpg"),
        (None, {}, 400, "give some words"),
        (None, {"text": "red", "k": "0"}, 422, "k"),
    ],
)
def test_post_bad_input(client, files, data, status, words) -> None:
    response = client.post("/api/search", files=files, data=data)
    assert response.status_code == status and words in response.json()["detail"]


def test_uploads_over_the_limit_are_refused(make_client, png_bytes) -> None:
    client = make_client(max_upload_bytes=2048)
    big = b"\x89PNG" + b"\0" * 5000
    response = client.post("/api/search", files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413 and "2048" in response.json()["detail"]
    # the whole body is capped too, with or without a Content-Length
    huge = b"x" * 10_000_000
    assert client.post("/api/search", content=huge).status_code == 413
    multipart = {"content-type": "multipart/form-data; boundary=b0undary"}
    streamed = client.post("/api/search", content=iter([b"x" * 1_000_000] * 10), headers=multipart)
    assert streamed.status_code == 413 and streamed.json()["detail"].startswith("request body is over")
    assert client.post("/api/search", files={"image": ("ok.png", png_bytes(1), "image/png")}).status_code == 200


def test_empty_library_is_a_409_with_a_hint(make_client, tmp_path) -> None:
    client = make_client(library=tmp_path / "empty")
    response = client.get("/api/search", params={"q": "dog"})
    assert response.status_code == 409 and "pixsearch index" in response.json()["detail"]
    health = client.get("/api/health").json()
    assert health["images"] == 0 and health["model"] is None


def test_an_unexpected_error_is_a_500_without_traceback(make_client) -> None:
    def broken(query: str, hits: list[ImageHit]) -> list[ImageHit]:
        raise RuntimeError("secret internals")

    client = make_client(rerank_hook=broken, raise_server_exceptions=False)
    response = client.get("/api/search", params={"q": "circle", "rerank": True})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the server log has the details"}
    assert "secret" not in response.text and "Traceback" not in response.text


def test_the_rerank_service_plugs_in_as_the_hook(make_client, tiny_blip_dirs, library_dir) -> None:
    from pixsearch.models import Role, create
    from pixsearch.rerank import RerankService

    spec = f"blip-itm:{tiny_blip_dirs['itm']}"
    service = RerankService(create(spec, Role.RERANKER), spec, library_dir)
    client = make_client(rerank_hook=service.rerank_images)
    body = client.get("/api/search", params={"q": "a red circle", "k": 6, "rerank": True}).json()
    assert body["reranked"] is True and len(body["hits"]) == 6
    assert all(hit["rerank_score"] is not None and hit["first_stage_score"] is not None for hit in body["hits"])
    assert [hit["score"] for hit in body["hits"]] == sorted((hit["score"] for hit in body["hits"]), reverse=True)
