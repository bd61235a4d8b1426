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
from clip_retrieval_code import knn_service_dedup
from sqlalchemy import select

from pixsearch.models import create
from pixsearch.storage import Library
from pixsearch.storage.schema import Embedding
from pixsearch.web.knn_query import first_of_each_group


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
        "indice_name": "pixsearch",  # ClipClient(url, indice_name="pixsearch"): GET /indices-list names it
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
    # no caption stored: the key is left out, as clip-retrieval's back end does (never "caption": null)
    assert len(results) == 5 and all(set(r) == {"id", "similarity", "url"} for r in results)
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
    assert texts[0]["caption"] == "a blue square" and all(set(r) == {"id", "similarity", "caption"} for r in texts)


def stored_vectors(library_dir: Path, image_ids: list[int]) -> np.ndarray:
    library = Library.open(library_dir)
    try:
        with library.session() as session:
            rows = {image_id: blob for image_id, blob in session.execute(select(Embedding.image_id, Embedding.vector))}
    finally:
        library.close()
    return np.stack([np.frombuffer(rows[i], dtype=np.float32) for i in image_ids])


def clip_retrieval_dedup():
    found = knn_service_dedup()
    if found is None:
        pytest.skip("clip-retrieval is not installed (pip install --no-deps clip-retrieval)")
    return found


def test_deduplicate_matches_clip_retrieval_on_the_same_vectors(client, image_ids, library_dir) -> None:
    non_uniques = clip_retrieval_dedup()
    body = client_body(text="x", num_images=26, num_result_ids=26)
    everything = [r["id"] for r in post(client, {**body, "deduplicate": False}).json()]
    kept = [r["id"] for r in post(client, body).json()]
    dropped = non_uniques(stored_vectors(library_dir, everything))
    assert kept == [image_id for i, image_id in enumerate(everything) if i not in dropped]
    assert len(kept) < len(everything)
    assert not {image_ids["img_0000.png"], image_ids["copy_of_img_0000.png"]} <= set(kept)


def test_a_chain_of_near_duplicates_is_one_group() -> None:
    # a ~ b and b ~ c (cos 19 degrees = 0.946), a and c not alike (cos 38 = 0.79); d far from all
    angles = np.radians([0.0, 19.0, 38.0, 90.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    assert first_of_each_group(vectors) == [0, 3]  # keeping a and c, as pixsearch did before, is not clip-retrieval's
    assert first_of_each_group(vectors[[2, 0, 1, 3]]) == [0, 3]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 16))
    cloud = np.repeat(centres, 5, axis=0) + rng.normal(scale=0.12, size=(60, 16))
    cloud = (cloud / np.linalg.norm(cloud, axis=1, keepdims=True)).astype(np.float32)[rng.permutation(60)]
    kept = first_of_each_group(cloud)
    assert 1 < len(kept) < 60
    try:
        non_uniques = clip_retrieval_dedup()
    except pytest.skip.Exception:
        return
    assert kept == [i for i in range(60) if i not in non_uniques(cloud)]
    assert first_of_each_group(vectors) == [i for i in range(4) if i not in non_uniques(vectors)]


def test_num_result_ids_pages_through_metadata(client) -> None:
    body = client_body(text="shapes", num_images=5, num_result_ids=20, deduplicate=False)
    results = post(client, body).json()
    assert len(results) == 20
    assert all(set(r) == {"id", "similarity", "url"} for r in results[:5])
    assert all(set(r) == {"id", "similarity"} for r in results[5:])  # the front end asks /metadata for these
    ids = [r["id"] for r in results[5:10]]
    meta = client.post("/metadata", content=json.dumps({"ids": ids, "indice_name": "pixsearch"})).json()
    assert [m["id"] for m in meta] == ids
    assert all(m["metadata"] == {"url": f"http://testserver/api/images/{m['id']}/thumbnail?size=large"} for m in meta)
    first_page = post(client, {**body, "num_images": 10}).json()
    assert [r.get("url") for r in first_page[5:10]] == [m["metadata"]["url"] for m in meta]
    # the front end's download button asks for 10,000 of each
    everything = post(client, {**body, "num_images": 10_000, "num_result_ids": 10_000}).json()
    assert len(everything) == 26 and all("url" in r for r in everything)
    wrong = client.post("/metadata", content=json.dumps({"ids": ids, "indice_name": "laion5B-L-14"}))
    assert wrong.status_code == 404 and "pixsearch" in wrong.json()["detail"]


def test_an_image_url_of_this_server_is_answered_from_the_stored_vector(client, image_ids) -> None:
    target = image_ids["img_0009.png"]
    for url in (
        f"http://testserver/api/images/{target}/thumbnail?size=large",  # the url /knn-service answers with
        f"http://testserver/api/images/{target}/file",
    ):
        results = post(client, client_body(image_url=url, num_images=3, deduplicate=False)).json()
        assert results[0]["id"] == target and results[0]["similarity"] == pytest.approx(1, abs=1e-5), url
    missing = post(client, client_body(image_url="http://testserver/api/images/999999/file"))
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    elsewhere = post(client, client_body(image_url=f"http://example.org/api/images/{target}/file"))
    assert elsewhere.status_code == 403  # another server's URL is fetched only when allowed


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
        (client_body(text="a", num_images=10_001), 422, "num_images"),
        (client_body(text="a", num_result_ids=10_001), 422, "num_result_ids"),
        (client_body(text="a", indice_name="laion5B-L-14"), 404, "no index named 'laion5B-L-14'"),
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
