"""/api/images/{id}: facts, thumbnails, the original file, captions and questions."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from pixsearch.storage import Library
from pixsearch.storage.annotations import caption_of

KEY = "correct-horse-battery"


def test_image_facts_and_neighbours(client, image_ids, photos) -> None:
    image_id = image_ids["camera.jpg"]
    body = client.get(f"/api/images/{image_id}", params={"neighbours": 5}).json()
    assert body["id"] == image_id and body["file_name"] == "camera.jpg"
    assert body["path"] == str(photos / "camera.jpg")
    assert (body["width"], body["height"]) == (96, 64) and body["size"] == (photos / "camera.jpg").stat().st_size
    assert body["taken_at"] == "2021-06-15T10:30:00" and body["camera"] == "Pixcam One"
    assert body["tags"] == [] and body["preview_url"] == f"/api/images/{image_id}/thumbnail?size=large"
    assert len(body["neighbours"]) == 5 and image_id not in {n["id"] for n in body["neighbours"]}
    assert client.get(f"/api/images/{image_id}", params={"neighbours": 0}).json()["neighbours"] == []


def test_tags_come_from_the_hook(make_client, image_ids) -> None:
    client = make_client(tags_hook=lambda image_id: [("circle", 0.9), ("red", 0.5)])
    tags = client.get(f"/api/images/{image_ids['img_0001.png']}").json()["tags"]
    assert tags == [
        {"tag": "circle", "score": 0.9, "source": "hook", "state": "suggested"},
        {"tag": "red", "score": 0.5, "source": "hook", "state": "suggested"},
    ]


@pytest.mark.parametrize(
    "path, status",
    [
        ("/api/images/999999", 404),
        ("/api/images/0", 422),
        ("/api/images/-3", 422),
        ("/api/images/abc", 422),
        ("/api/images/1.5", 422),
        ("/api/images/99999999999999999999999", 422),
        ("/api/images/999999/thumbnail", 404),
        ("/api/images/999999/file", 404),
        ("/api/images/1?neighbours=101", 422),
        ("/api/images/1/thumbnail?size=huge", 422),
    ],
)
def test_bad_image_requests(client, path, status) -> None:
    response = client.get(path)
    assert response.status_code == status and isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "path",
    [
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2e%2e/thumbnail",
        "/api/images/1/file/../../../../etc/passwd",
        "/api/images//etc/passwd/file",
        "/static/..%2F..%2Fsettings.py",
        "/static/../../pixsearch/settings.py",
    ],
)
def test_no_path_from_the_url_reaches_the_disk(client, path) -> None:
    response = client.get(path)
    assert 400 <= response.status_code < 500
    assert b"root:" not in response.content and b"class Settings" not in response.content


def test_thumbnails_are_made_once_and_cached_on_disk(make_client, fresh_library, image_ids) -> None:
    client = make_client(library=fresh_library, thumbnail_size=32, preview_size=80)
    image_id = image_ids["camera.jpg"]
    response = client.get(f"/api/images/{image_id}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert "max-age" in response.headers["cache-control"]
    small = Image.open(io.BytesIO(response.content))
    assert small.format == "JPEG" and max(small.size) == 32
    cached = list((fresh_library / "thumbs" / "32").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == response.content
    before = cached[0].stat().st_mtime_ns
    assert client.get(f"/api/images/{image_id}/thumbnail").content == response.content
    assert cached[0].stat().st_mtime_ns == before
    large = Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/thumbnail?size=large").content))
    assert large.size == (80, 53)  # the 96 x 64 original, fitted into 80 x 80
    assert len(list((fresh_library / "thumbs" / "80").rglob("*.jpg"))) == 1


def test_original_file_is_served_by_id(client, image_ids, photos) -> None:
    response = client.get(f"/api/images/{image_ids['img_0003.png']}/file")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == (photos / "img_0003.png").read_bytes()
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_vanished_file_is_a_404_not_a_500(make_client, library_dir, photos, tmp_path) -> None:
    # a library of its own whose photo then disappears
    from pixsearch.storage import Library
    from pixsearch.storage.schema import ImageRow

    library_copy = tmp_path / "library"
    shutil.copytree(library_dir, library_copy, ignore=shutil.ignore_patterns("captions.json", "thumbs"))
    gone = tmp_path / "gone.png"
    shutil.copy(photos / "img_0002.png", gone)
    library = Library.open(library_copy)
    with library.session() as session:
        row = session.query(ImageRow).filter(ImageRow.path == str(photos / "img_0002.png")).one()
        row.path = str(gone)
        image_id = row.id
    library.close()
    gone.unlink()
    client = make_client(library=library_copy, captioner="blip-caption:/nowhere")
    for path in ("thumbnail", "file"):
        response = client.get(f"/api/images/{image_id}/{path}")
        assert response.status_code == 404 and str(gone) in response.json()["detail"]


# -- captions ---------------------------------------------------------------------------------------
def test_caption_is_generated_once_then_stored(make_client, fresh_library, image_ids, caption_spec) -> None:
    client = make_client(library=fresh_library, captioner=caption_spec, api_key=KEY)
    image_id = image_ids["img_0004.png"]
    assert client.get(f"/api/images/{image_id}").json()["caption"] is None
    first = client.post(f"/api/images/{image_id}/caption", headers={"X-API-Key": KEY})
    assert first.status_code == 200
    body = first.json()
    assert body["generated"] is True and body["source"] == "model" and body["model"] == caption_spec
    assert isinstance(body["caption"], str) and body["caption"] and body["stored"] is True
    again = client.post(f"/api/images/{image_id}/caption", json={}).json()
    assert again["generated"] is False and again["caption"] == body["caption"] and again["stored"] is True
    assert client.get(f"/api/images/{image_id}").json()["caption"]["caption"] == body["caption"]
    # stored in the library's captions table (shown again; a model's caption is not keyword-indexed)
    library = Library.open(fresh_library)
    with library.session() as session:
        assert caption_of(session, image_id, caption_spec) == body["caption"]
        assert caption_of(session, image_id, "person") is None
    library.close()
    assert not (fresh_library / "captions.json").exists()
    # a new server over the same library finds it without generating
    reopened = make_client(library=fresh_library, captioner=caption_spec)
    assert reopened.post(f"/api/images/{image_id}/caption").json()["generated"] is False


def test_setting_or_regenerating_a_caption_needs_the_key(make_client, fresh_library, image_ids, caption_spec) -> None:
    image_id = image_ids["img_0006.png"]
    url = f"/api/images/{image_id}/caption"
    closed = make_client(library=fresh_library, captioner=caption_spec)
    refused = closed.post(url, json={"caption": "my dog"}, headers={"X-API-Key": KEY})
    assert refused.status_code == 403 and "switched off" in refused.json()["detail"]
    assert closed.post(url, json={"regenerate": True}).status_code == 403

    client = make_client(library=fresh_library, captioner=caption_spec, api_key=KEY)
    assert client.post(url, json={"caption": "my dog"}).status_code == 401
    wrong = client.post(url, json={"caption": "my dog"}, headers={"X-API-Key": "wrong-key-123"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    done = client.post(url, json={"caption": "  my dog  "}, headers={"X-API-Key": KEY}).json()
    assert done["caption"] == "my dog" and done["source"] == "user" and done["model"] is None
    assert client.post(url).json()["caption"] == "my dog"
    regenerated = client.post(url, json={"regenerate": True}, headers={"Authorization": f"Bearer {KEY}"}).json()
    assert regenerated["source"] == "model" and regenerated["generated"] is True


class CountingCaptioner:
    def __init__(self) -> None:
        self.calls = 0

    def load(self) -> None: ...

    def close(self) -> None: ...

    def caption(self, images):
        self.calls += 1
        return [f"a drawing, take {self.calls}"]


@pytest.mark.parametrize("api_key, headers", [(None, {}), (KEY, {}), (KEY, {"X-API-Key": "wrong-key-123"})])
def test_a_caller_who_may_not_write_sees_a_caption_that_is_not_stored(
    make_client, fresh_library, image_ids, api_key, headers
) -> None:
    client = make_client(library=fresh_library, captioner="blip-caption:/unused", api_key=api_key)
    captioner = CountingCaptioner()
    client.app.state.context.models._captioner._model = captioner  # as if loaded
    image_id = image_ids["img_0005.png"]
    url = f"/api/images/{image_id}/caption"
    first = client.post(url, headers=headers)
    assert first.status_code == 200
    body = first.json()
    assert (body["caption"], body["generated"], body["stored"]) == ("a drawing, take 1", True, False)
    # kept in memory only: shown again without generating again, never written to the library
    again = client.post(url, json={}, headers=headers).json()
    assert (again["caption"], again["generated"], again["stored"]) == ("a drawing, take 1", False, False)
    assert client.get(f"/api/images/{image_id}").json()["caption"]["stored"] is False
    assert captioner.calls == 1
    library = Library.open(fresh_library)
    with library.session() as session:
        assert caption_of(session, image_id, "blip-caption:/unused") is None
    library.close()
    # a new server over the same library has nothing stored
    assert (
        make_client(library=fresh_library, captioner="blip-caption:/unused")
        .get(f"/api/images/{image_id}")
        .json()["caption"]
        is None
    )


def test_a_caller_who_may_write_stores_the_generated_caption(make_client, fresh_library, image_ids) -> None:
    client = make_client(library=fresh_library, captioner="blip-caption:/unused", api_key=KEY)
    captioner = CountingCaptioner()
    client.app.state.context.models._captioner._model = captioner
    auth = {"Authorization": f"Bearer {KEY}"}
    first, second = image_ids["img_0005.png"], image_ids["img_0006.png"]
    body = client.post(f"/api/images/{first}/caption", headers=auth).json()
    assert (body["caption"], body["generated"], body["stored"]) == ("a drawing, take 1", True, True)
    # seen anonymously first (kept in memory), then by a writer: stored as it was, not made again
    assert client.post(f"/api/images/{second}/caption").json()["stored"] is False
    kept = client.post(f"/api/images/{second}/caption", headers=auth).json()
    assert (kept["caption"], kept["generated"], kept["stored"]) == ("a drawing, take 2", False, True)
    assert captioner.calls == 2
    library = Library.open(fresh_library)
    with library.session() as session:
        assert caption_of(session, first, "blip-caption:/unused") == "a drawing, take 1"
        assert caption_of(session, second, "blip-caption:/unused") == "a drawing, take 2"
    library.close()


@pytest.mark.parametrize(
    "body, words",
    [
        ({"caption": "   "}, "blank"),
        ({"caption": "x" * 1001}, "1000"),
        ({"colour": "red"}, "colour"),
        ({"regenerate": "maybe"}, "regenerate"),
    ],
)
def test_bad_caption_bodies(make_client, image_ids, caption_spec, body, words) -> None:
    client = make_client(captioner=caption_spec, api_key=KEY)
    response = client.post(f"/api/images/{image_ids['img_0001.png']}/caption", json=body, headers={"X-API-Key": KEY})
    assert response.status_code == 422 and words in response.json()["detail"]


def test_no_captioner_means_404_and_a_missing_model_503(make_client, image_ids, tmp_path) -> None:
    image_id = image_ids["img_0001.png"]
    response = make_client().post(f"/api/images/{image_id}/caption")
    assert response.status_code == 404 and "no captioner" in response.json()["detail"]
    missing = f"blip-caption:{tmp_path / 'absent'}"
    response = make_client(captioner=missing).post(f"/api/images/{image_id}/caption")
    assert response.status_code == 503 and missing in response.json()["detail"]


# -- questions ----------------------------------------------------------------------------------------
def test_ask_returns_ranked_answers_with_probabilities(make_client, image_ids, vqa_spec) -> None:
    client = make_client(answerer=vqa_spec)
    response = client.post(
        f"/api/images/{image_ids['img_0001.png']}/ask", json={"question": " what color? ", "top_k": 3}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["question"] == "what color?" and body["model"] == vqa_spec
    probabilities = [answer["probability"] for answer in body["answers"]]
    assert 1 <= len(body["answers"]) <= 3 and all(answer["answer"] for answer in body["answers"])
    assert probabilities == sorted(probabilities, reverse=True) and all(0 <= p <= 1 for p in probabilities)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "blank"),
        ({"question": "x" * 301}, "300"),
        ({}, "question"),
        ({"question": "why?", "top_k": 0}, "top_k"),
        ({"question": "why?", "top_k": 11}, "top_k"),
        ({"question": ["why?"]}, "question"),
    ],
)
def test_bad_questions(make_client, image_ids, vqa_spec, body, words) -> None:
    response = make_client(answerer=vqa_spec).post(f"/api/images/{image_ids['img_0001.png']}/ask", json=body)
    assert response.status_code == 422 and words in response.json()["detail"]


def test_ask_with_broken_json_or_no_answerer(make_client, image_ids) -> None:
    client = make_client()
    url = f"/api/images/{image_ids['img_0001.png']}/ask"
    broken = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]
    response = client.post(url, json={"question": "why?"})
    assert response.status_code == 404 and "no answerer" in response.json()["detail"]
    assert client.post("/api/images/999999/ask", json={"question": "why?"}).status_code == 404


def test_write_paths_cannot_be_reached_by_get(client, image_ids) -> None:
    image_id = image_ids["img_0001.png"]
    assert client.get(f"/api/images/{image_id}/caption").status_code == 405
    assert client.get(f"/api/images/{image_id}/ask").status_code == 405


def test_a_slow_caption_does_not_hold_up_searches(make_client, fresh_library, image_ids) -> None:
    import threading

    class Slow:
        started, release = threading.Event(), threading.Event()

        def load(self) -> None: ...

        def close(self) -> None:
            self.release.set()

        def caption(self, images):
            self.started.set()
            assert self.release.wait(30)
            return ["slow words"]

    client = make_client(library=fresh_library, captioner="blip-caption:/unused")
    client.app.state.context.models._captioner._model = Slow()  # as if loaded
    result: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: result.update(r=client.post(f"/api/images/{image_ids['img_0008.png']}/caption"))
    )
    worker.start()
    try:
        assert Slow.started.wait(30)
        assert client.get("/api/search", params={"q": "circle", "k": 3}).status_code == 200  # while captioning
        assert "r" not in result
    finally:
        Slow.release.set()
        worker.join(30)
    assert result["r"].json()["caption"] == "slow words"
