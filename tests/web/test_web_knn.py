"""/knn-service, /indices-list and /metadata, driven the way clip-retrieval's client and front end drive them."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pixsearch.models import create


def client_body(**query) -> dict:
    """Exactly what clip_retrieval.clip_client.ClipClient.__search_knn_api__ posts (its defaults)."""
    body = {
        "text": None,
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "deduplicate": True,
        "use_safety_model": True,
        "use_violence_detector": True,
        "indice_name": "laion5B-L-14",
        "use_mclip": False,
        "aesthetic_score": 9,
        "aesthetic_weight": 0.5,
        "modality": "image",
        "num_images": 40,
        "num_result_ids": 40,
        "verbose": False,
    }
    body.update(query)
    return body


def post(client, body) -> object:
    # requests.post(url, data=json.dumps(...)) sends no Content-Type at all
    return client.post("/knn-service", content=json.dumps(body).encode())


def test_clip_client_text_query(client) -> None:
    response = post(client, client_body(text="a red circle", num_images=5, num_result_ids=5, deduplicate=False))
    assert response.status_code == 200
    results = response.json()
    assert len(results) == 5 and all(set(r) == {"id", "similarity", "caption", "url"} for r in results)
    similarities = [r["similarity"] for r in results]
    assert similarities == sorted(similarities, reverse=True)
    assert results[0]["url"] == f"http://testserver/api/images/{results[0]['id']}/thumbnail?size=large"
    assert client.get(results[0]["url"]).headers["content-type"] == "image/jpeg"
    api = client.get("/api/search", params={"q": "a red circle", "k": 5}).json()["hits"]
    assert [r["id"] for r in results] == [h["id"] for h in api]


def test_clip_client_image_query_finds_the_image(client, image_ids, photos) -> None:
    encoded = base64.b64encode((photos / "img_0009.png").read_bytes()).decode()
    results = post(client, client_body(image=encoded, num_images=3, deduplicate=False)).json()
    assert results[0]["id"] == image_ids["img_0009.png"] and results[0]["similarity"] == pytest.approx(1, abs=1e-4)


def test_front_end_shape_with_text_plain_and_captions(make_client, fresh_library, image_ids, caption_spec) -> None:
    client = make_client(library=fresh_library, captioner=caption_spec)
    target = image_ids["img_0009.png"]
    caption = client.post(f"/api/images/{target}/caption").json()["caption"]
    body = {
        "text": "shapes",
        "image": None,
        "image_url": None,
        "modality": "image",
        "num_images": 26,
        "indice_name": "pixsearch",
        "num_result_ids": 26,
        "use_mclip": False,
        "deduplicate": False,
        "use_safety_model": False,
    }
    response = client.post(
        "/knn-service", content=json.dumps(body), headers={"content-type": "text/plain;charset=UTF-8"}
    )
    results = {r["id"]: r for r in response.json()}
    assert len(results) == 26 and results[target]["caption"] == caption
    assert client.get("/indices-list").json() == ["pixsearch"]
    meta = client.post("/metadata", content=json.dumps({"ids": [target, 10**9], "indice_name": "pixsearch"})).json()
    assert meta == [{"id": target, "metadata": {"caption": caption, "url": results[target]["url"]}}]


def test_embedding_input_and_text_modality(client, clip_spec, photos) -> None:
    encoder = create(clip_spec)
    vector = encoder.encode_texts(["a blue square"])[0]
    by_vector = post(client, client_body(embedding_input=vector.tolist(), num_images=4, deduplicate=False)).json()
    by_text = post(client, client_body(text="a blue square", num_images=4, deduplicate=False)).json()
    assert [r["id"] for r in by_vector] == [r["id"] for r in by_text]
    np.testing.assert_allclose([r["similarity"] for r in by_vector], [r["similarity"] for r in by_text], atol=1e-5)
    texts = post(client, client_body(text="a blue square", modality="text", num_images=10)).json()
    assert sorted(r["caption"] for r in texts) == ["a blue square", "a red circle", "a small green triangle"]
    assert texts[0]["caption"] == "a blue square" and all(r["url"] is None for r in texts)


def test_deduplicate_drops_the_copy(client, image_ids) -> None:
    original, copy = image_ids["img_0000.png"], image_ids["copy_of_img_0000.png"]
    everything = {r["id"] for r in post(client, client_body(text="x", num_images=26, deduplicate=False)).json()}
    assert {original, copy} <= everything
    deduplicated = [r["id"] for r in post(client, client_body(text="x", num_images=26, deduplicate=True)).json()]
    assert len({original, copy} & set(deduplicated)) == 1 and len(deduplicated) == len(set(deduplicated))


@pytest.mark.parametrize(
    "body, status, words",
    [
        (client_body(), 400, "exactly one of"),
        (client_body(text="a", image="aGVsbG8="), 400, "got text, image"),
        (client_body(image="%%% not base64 %%%"), 400, "base64"),
        (client_body(image=base64.b64encode(b"hello, not an image").decode()), 422, "not an image"),
        (client_body(embedding_input=[0.1, 0.2]), 400, "2 values"),
        (client_body(embedding_input=[0.0] * 16), 400, "zeros"),
        (client_body(text="a", num_images=0), 422, "num_images"),
        (client_body(text="a", num_images=1001), 422, "num_images"),
        (client_body(text="a", modality="video"), 422, "modality"),
        (client_body(text=5), 422, "text"),
        (client_body(image_url="http://127.0.0.1:1/x.png"), 403, "image_url"),
    ],
)
def test_bad_knn_requests(client, body, status, words) -> None:
    response = post(client, body)
    assert response.status_code == status and words in response.json()["detail"]


@pytest.mark.parametrize(
    "raw, words", [(b"{broken", "not valid JSON"), (b"[1, 2]", "JSON object"), (b"", "JSON object")]
)
def test_knn_body_must_be_a_json_object(client, raw, words) -> None:
    response = client.post("/knn-service", content=raw)
    assert response.status_code == 400 and words in response.json()["detail"]


@pytest.fixture
def local_files(photos: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the photos folder."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(photos), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_url_when_allowed(make_client, local_files, image_ids) -> None:
    client = make_client(allow_image_url=True)
    results = post(client, client_body(image_url=f"{local_files}/img_0011.png", num_images=2, deduplicate=False)).json()
    assert results[0]["id"] == image_ids["img_0011.png"]
    missing = post(client, client_body(image_url=f"{local_files}/absent.png"))
    assert missing.status_code == 422 and "download failed" in missing.json()["detail"]
    assert post(client, client_body(image_url="file:///etc/passwd")).status_code == 400


def test_knn_body_limit(make_client) -> None:
    client = make_client(max_upload_bytes=4096)
    big = base64.b64encode(b"\x89PNG" + b"\0" * 8000).decode()
    response = post(client, client_body(image=big))
    assert response.status_code == 413 and "over the limit of 4096" in response.json()["detail"]
    streamed = client.post("/knn-service", content=iter([b" " * 1_000_000] * 3))
    assert streamed.status_code == 413
