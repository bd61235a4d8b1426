"""Malformed requests get a 4xx with a one-line reason, never a 500: NUL characters, lone surrogates,
deep nesting, huge numbers, wrong types and bad ids; and an unexpected error is a clean JSON 500 that
leaves the connection usable."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import live_server

from pixsearch.settings import Settings
from pixsearch.web import WebOptions

KEY = "correct-horse-battery"
DEEP = 100_000


def _client_error(response, *words: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for word in words:
        assert word in detail, (word, detail)


# -- NUL characters -------------------------------------------------------------------------------
def test_nul_in_a_search_query_or_form_field(client) -> None:
    _client_error(client.get("/api/search", params={"q": "\x00"}), "q", "NUL")
    _client_error(client.get("/api/search", params={"q": "red \x00 circle"}), "q", "NUL")
    _client_error(client.post("/api/search", data={"text": "red\x00"}), "text", "NUL")
    _client_error(client.get("/api/search?q=%22%00%22"), "NUL")


def test_nul_on_the_search_page(client) -> None:
    page = client.get("/", params={"q": "\x00"}, headers={"Accept": "text/html"})
    assert page.status_code == 422 and "NUL" in page.text and "text/html" in page.headers["content-type"]
    form = client.post("/", data={"q": "a\x00b"}, headers={"Accept": "text/html"}, follow_redirects=False)
    assert form.status_code == 422 and "NUL" in form.text


def test_nul_in_write_and_model_bodies(make_client, fresh_library, image_ids, caption_spec) -> None:
    client = make_client(library=fresh_library, api_key=KEY, captioner=caption_spec)
    base = f"/api/images/{image_ids['img_0001.png']}"
    auth = {"X-API-Key": KEY}
    _client_error(client.post(f"{base}/tags", json={"name": "a\x00"}, headers=auth), "name", "NUL")
    _client_error(client.delete(f"{base}/tags/a%00b", headers=auth), "name", "NUL")
    _client_error(client.post(f"{base}/caption", json={"caption": "\x00dog"}, headers=auth), "caption", "NUL")
    _client_error(client.post(f"{base}/ask", json={"question": "why\x00"}), "question", "NUL")
    _client_error(client.post(f"{base}/entail", json={"statement": "\x00"}), "statement", "NUL")
    _client_error(client.get(f"{base}/heatmap", params={"q": "\x00"}), "q", "NUL")
    _client_error(client.post("/knn-service", content=json.dumps({"text": "a\x00b"})), "text", "NUL")
    assert client.get(f"{base}/tags").json()["tags"] == []


# -- lone surrogates ---------------------------------------------------------------------------------
SURROGATE = '"\\ud800"'  # valid JSON escape, not valid Unicode


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/knn-service", '{"text": %s}', "text"),
        ("/knn-service", '{"image_url": %s}', "image_url"),
        ("/api/images/1/ask", '{"question": %s}', "question"),
        ("/api/images/1/entail", '{"statement": %s}', "statement"),
        ("/api/images/1/tags", '{"name": %s}', "name"),
        ("/api/images/1/caption", '{"caption": %s}', "caption"),
    ],
)
def test_lone_surrogates_in_json(make_client, fresh_library, path, body, field) -> None:
    client = make_client(library=fresh_library, api_key=KEY)
    response = client.post(
        path, content=(body % SURROGATE).encode(), headers={"content-type": "application/json", "X-API-Key": KEY}
    )
    _client_error(response, field)
    assert "surrogate" in response.json()["detail"] or "unicode" in response.json()["detail"]


def test_bytes_that_are_not_utf8(client) -> None:
    _client_error(client.post("/knn-service", content=b'{"text": "\xff\xfe"}'), "JSON")
    _client_error(client.post("/metadata", content=b'{"ids": [1], "indice_name": "\xc3"}'), "JSON")


# -- deep nesting --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/knn-service", "/metadata", "/api/images/1/ask", "/api/images/1/tags"])
@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_deeply_nested_json(make_client, fresh_library, path, opening) -> None:
    client = make_client(library=fresh_library, api_key=KEY)
    body = (opening * DEEP).encode()
    response = client.post(path, content=body, headers={"content-type": "application/json", "X-API-Key": KEY})
    _client_error(response)
    assert client.get("/api/health").status_code == 200


# -- huge numbers, wrong types, bad ids -----------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        '{"text": "red", "num_images": 1e400}',
        '{"text": "red", "num_images": %s}' % ("9" * 5000),
        '{"text": "red", "num_images": -1}',
        '{"text": "red", "num_result_ids": 99999999999999999999999}',
        '{"embedding_input": [1e308, 1e308, 1e308]}',
        '{"embedding_input": [NaN]}',
        '{"embedding_input": "red"}',
        '{"text": 5}',
        '{"text": ["red"]}',
        '{"text": {"a": 1}}',
        '{"text": "red", "modality": "video"}',
        '{"text": "red", "deduplicate": "perhaps"}',
        '{"image": "!!!not base64!!!"}',
        '{"image": 12}',
        "[]",
        '"text"',
        "null",
        "",
        "{",
    ],
)
def test_bad_knn_bodies(client, body) -> None:
    _client_error(client.post("/knn-service", content=body.encode()))


def test_embeddings_at_the_float_limits(client) -> None:
    dim = client.app.state.context.search.model.dim
    huge = client.post("/knn-service", content=json.dumps({"embedding_input": [1e308] * dim, "num_images": 3}))
    assert huge.status_code == 200 and len(huge.json()) == 3
    tiny = client.post("/knn-service", content=json.dumps({"embedding_input": [5e-324] * dim, "num_images": 3}))
    assert tiny.status_code == 200 and [r["id"] for r in tiny.json()] == [r["id"] for r in huge.json()]
    nan = "[" + ", ".join(["NaN"] * dim) + "]"
    _client_error(client.post("/knn-service", content=f'{{"embedding_input": {nan}}}'), "finite")


@pytest.mark.parametrize(
    "body",
    [
        '{"ids": [1e400]}',
        '{"ids": [%s]}' % ("9" * 5000),
        '{"ids": [99999999999999999999999]}',
        '{"ids": [-1]}',
        '{"ids": "1"}',
        '{"ids": [[1]]}',
        '{"ids": [1], "indice_name": 7}',
        '{"ids": null}',
        "{}",
        "[1, 2]",
    ],
)
def test_bad_metadata_bodies(client, body) -> None:
    _client_error(client.post("/metadata", content=body.encode()))


@pytest.mark.parametrize(
    "path",
    [
        "/api/search?q=red&k=1e400",
        "/api/search?q=red&k=99999999999999999999999999",
        "/api/search?q=red&k=-5",
        "/api/search?q=red&offset=99999999999999999999",
        "/api/search?like=99999999999999999999999",
        "/api/search?like=abc",
        "/api/search?q=red&rerank=perhaps",
        "/api/search?q=" + "x" * 501,
        "/api/images/%00",
        "/api/images/1%00",
        "/api/images/9223372036854775808",
        "/api/images/1e3",
        "/api/images/1/thumbnail?size=%00",
        "/api/images/1/heatmap",
        "/?k=1e400",
        "/images/99999999999999999999",
    ],
)
def test_bad_parameters(client, path) -> None:
    assert 400 <= client.get(path).status_code < 500


@pytest.mark.parametrize(
    "body",
    [
        {"question": "why?", "top_k": 1e300},
        {"question": "why?", "top_k": 10**40},
        {"question": "why?", "top_k": "five"},
        {"question": 5},
        {"question": None},
        {"question": {"a": 1}},
    ],
)
def test_bad_question_bodies(make_client, image_ids, vqa_spec, body) -> None:
    client = make_client(answerer=vqa_spec)
    _client_error(client.post(f"/api/images/{image_ids['img_0001.png']}/ask", json=body))


# -- an unexpected error ----------------------------------------------------------------------------
@pytest.fixture
def live(fresh_library: Path) -> Iterator[int]:
    """A real uvicorn server whose rerank hook fails: its port."""

    def broken(query, hits):
        raise RuntimeError("the reranker fell over")

    options = WebOptions(cutoff_z=None, duplicate_threshold=None, keyword_weight=0.0)
    with live_server(Settings(library=fresh_library), options, rerank_hook=broken, log_level="critical") as port:
        yield port


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_usable(live) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", live, timeout=30)
    try:
        connection.request("GET", "/api/search?q=red&rerank=true")
        failed = connection.getresponse()
        body = json.loads(failed.read())
        assert failed.status == 500 and failed.getheader("content-type") == "application/json"
        assert body == {"detail": "internal server error; the server log has the details"}
        assert "fell over" not in json.dumps(body)
        connection.request("GET", "/api/health")  # the same connection (keep-alive)
        after = connection.getresponse()
        assert after.status == 200 and json.loads(after.read())["status"] == "ok"
    finally:
        connection.close()
