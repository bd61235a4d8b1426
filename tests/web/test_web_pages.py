"""The server-rendered pages, /docs and the OpenAPI description."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

HTML = {"accept": "text/html"}


def result_ids(html: str) -> list[int]:
    grid = html.split('id="results"', 1)[1].split("</ul>", 1)[0]
    return [int(match) for match in re.findall(r'href="/images/(\d+)"', grid)]


def test_empty_search_page_has_the_form(client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    for needle in ('id="search-form"', 'name="q"', 'type="file"', 'name="image"', 'name="k"', 'name="rerank"'):
        assert needle in html
    assert 'id="results"' not in html and "disabled" in html  # rerank is off without a reranker


def test_words_search_shows_thumbnails_scores_and_paging(client) -> None:
    html = client.get("/", params={"q": "a red circle", "k": 12}).text
    ids = result_ids(html)
    api = client.get("/api/search", params={"q": "a red circle", "k": 12}).json()["hits"]
    assert ids == [hit["id"] for hit in api]
    assert html.count('src="/api/images/') == 12 and html.count("more like this") == 12
    assert f"{api[0]['score']:.3f}" in html and 'id="next"' in html and 'id="prev"' not in html
    second = client.get("/", params={"q": "a red circle", "k": 12, "offset": 12}).text
    assert result_ids(second) == [
        h["id"] for h in client.get("/api/search", params={"q": "a red circle", "k": 12, "offset": 12}).json()["hits"]
    ]
    assert 'id="prev"' in second and "Results 13–24" in second


def test_more_like_this_page(client, image_ids) -> None:
    image_id = image_ids["img_0003.png"]
    html = client.get("/", params={"like": image_id, "k": 12}).text
    assert 'id="like"' in html and "img_0003.png" in html
    assert image_id not in result_ids(html) and len(result_ids(html)) == 12


def test_no_good_match_state(make_client) -> None:
    html = make_client(min_score=0.99).get("/", params={"q": "a red circle"}).text
    assert 'id="no-match"' in html and "No good match" in html and 'id="results"' not in html


def test_photo_upload_redirects_to_pageable_results(client, image_ids, png_bytes) -> None:
    response = client.post(
        "/", files={"image": ("mine.png", png_bytes(5), "image/png")}, data={"k": "12"}, follow_redirects=False
    )
    assert response.status_code == 303
    target = urlparse(response.headers["location"])
    assert target.path == "/" and parse_qs(target.query)["k"] == ["12"] and "qid" in parse_qs(target.query)
    html = client.get(response.headers["location"]).text
    assert result_ids(html)[0] == image_ids["img_0005.png"] and 'id="next"' in html
    html = client.get(response.headers["location"] + "&offset=12").text
    assert len(result_ids(html)) == 12


def test_words_form_redirects_to_a_get(client) -> None:
    response = client.post("/", data={"q": " red ", "k": "24", "rerank": "true"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?k=24&q=red&rerank=true"


def test_bad_input_on_the_pages_is_shown_not_crashed(client) -> None:
    expired = client.get("/", params={"qid": "nope"})
    assert expired.status_code == 404 and "expired" in expired.text and 'id="search-form"' in expired.text
    bad = client.post("/", files={"image": ("x.png", b"junk", "image/png")})
    assert bad.status_code == 422 and "not an image" in bad.text and 'id="error"' in bad.text
    assert client.get("/", params={"k": 0}, headers=HTML).status_code == 422
    missing = client.get("/images/999999", headers=HTML)
    assert missing.status_code == 404 and 'id="error-page"' in missing.text and "999999" in missing.text
    assert client.get("/images/999999").headers["content-type"] == "application/json"


def test_result_page_with_models(make_client, fresh_library, image_ids, caption_spec, vqa_spec) -> None:
    client = make_client(library=fresh_library, captioner=caption_spec, answerer=vqa_spec)
    image_id = image_ids["camera.jpg"]
    html = client.get(f"/images/{image_id}").text
    assert 'id="preview"' in html and f'src="/api/images/{image_id}/thumbnail?size=large"' in html
    assert "2021-06-15 10:30" in html and "Pixcam One" in html and "96 × 64 px" in html and "camera.jpg" in html
    assert 'data-missing="true"' in html and 'id="ask-form"' in html
    assert 'id="neighbours"' in html and f'href="/?like={image_id}"' in html
    caption = client.post(f"/api/images/{image_id}/caption").json()["caption"]
    html = client.get(f"/images/{image_id}").text
    assert 'data-missing="false"' in html and caption in html


def test_result_page_hides_unconfigured_boxes(make_client, image_ids) -> None:
    client = make_client(tags_hook=lambda image_id: [("circle", 0.8)])
    html = client.get(f"/images/{image_ids['img_0002.png']}").text
    assert 'id="caption"' not in html and 'id="ask-form"' not in html
    assert 'id="tags"' in html and "circle" in html


def test_static_files_and_docs(client) -> None:
    assert "setupAsk" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path, methods in {
        "/api/search": {"get", "post"},
        "/api/images/{image_id}": {"get"},
        "/api/images/{image_id}/thumbnail": {"get"},
        "/api/images/{image_id}/caption": {"post"},
        "/api/images/{image_id}/ask": {"post"},
        "/api/health": {"get"},
        "/knn-service": {"post"},
    }.items():
        assert methods <= set(paths[path]), path
    assert "requestBody" in paths["/knn-service"]["post"]
    assert not any(path == "/" or path.startswith("/images/") for path in paths)


def test_user_text_is_escaped_on_the_pages(make_client, fresh_library, image_ids) -> None:
    key = "correct-horse-battery"
    client = make_client(library=fresh_library, captioner="blip-caption:/unused", api_key=key)
    image_id = image_ids["img_0010.png"]
    evil = '<script>alert("x")</script>'
    client.post(f"/api/images/{image_id}/caption", json={"caption": evil}, headers={"X-API-Key": key})
    html = client.get(f"/images/{image_id}").text
    assert evil not in html and "&lt;script&gt;" in html
    assert evil not in client.get("/", params={"q": evil}).text
