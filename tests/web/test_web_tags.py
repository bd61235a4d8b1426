"""Tags in the API and on the result page (read, add, confirm, remove), and the statement check."""

from __future__ import annotations

import pytest

from pixsearch.storage import Library
from pixsearch.storage.annotations import suggest_tags

KEY = "correct-horse-battery"


@pytest.fixture
def tagged(fresh_library, image_ids):
    """The fresh library with two model suggestions on img_0001.png."""
    library = Library.open(fresh_library)
    with library.session() as session:
        suggest_tags(session, image_ids["img_0001.png"], [("circle", 0.9), ("red", 0.6)], "zero-shot:m")
    library.close()
    return fresh_library


def test_tags_are_read_from_the_library(make_client, tagged, image_ids) -> None:
    client = make_client(library=tagged)
    image_id = image_ids["img_0001.png"]
    body = client.get(f"/api/images/{image_id}/tags").json()
    assert body == {
        "image_id": image_id,
        "tags": [
            {"tag": "circle", "score": 0.9, "source": "zero-shot:m", "state": "suggested"},
            {"tag": "red", "score": 0.6, "source": "zero-shot:m", "state": "suggested"},
        ],
    }
    assert client.get(f"/api/images/{image_id}").json()["tags"] == body["tags"]
    html = client.get(f"/images/{image_id}").text
    assert 'data-name="circle"' in html and 'data-editable="false"' in html  # no API key: no editing


def test_add_confirm_remove_round_trip(make_client, tagged, image_ids) -> None:
    client = make_client(library=tagged, api_key=KEY)
    image_id = image_ids["img_0001.png"]
    url = f"/api/images/{image_id}/tags"
    auth = {"X-API-Key": KEY}
    added = client.post(url, json={"name": " Holiday  2020 "}, headers=auth).json()["tags"]
    assert added[0] == {"tag": "Holiday 2020", "score": None, "source": "person", "state": "confirmed"}
    confirmed = client.post(url, json={"name": "red", "action": "confirm"}, headers=auth).json()["tags"]
    assert {t["tag"]: t["state"] for t in confirmed} == {
        "Holiday 2020": "confirmed",
        "red": "confirmed",
        "circle": "suggested",
    }
    left = client.delete(f"{url}/circle", headers=auth).json()["tags"]
    assert sorted(t["tag"] for t in left) == ["Holiday 2020", "red"]
    # a later model run neither re-adds the removed tag nor overwrites the confirmed one
    library = Library.open(tagged)
    with library.session() as session:
        suggest_tags(session, image_id, [("circle", 0.99), ("red", 0.1), ("blue", 0.5)], "zero-shot:m")
    library.close()
    final = {t["tag"]: (t["state"], t["score"]) for t in client.get(url).json()["tags"]}
    assert "circle" not in final and final["red"] == ("confirmed", 0.6) and final["blue"] == ("suggested", 0.5)
    html = client.get(f"/images/{image_id}").text
    assert 'data-editable="true"' in html and 'id="tag-form"' in html
    assert client.get("/api/search", params={"q": "holiday", "k": 3}).status_code == 200


def test_tag_changes_need_the_key(make_client, tagged, image_ids) -> None:
    url = f"/api/images/{image_ids['img_0001.png']}/tags"
    closed = make_client(library=tagged)
    assert closed.post(url, json={"name": "x"}).status_code == 403
    assert closed.delete(f"{url}/circle").status_code == 403
    client = make_client(library=tagged, api_key=KEY)
    assert client.post(url, json={"name": "x"}).status_code == 401
    assert client.delete(f"{url}/circle", headers={"X-API-Key": "wrong-key-123"}).status_code == 401
    for body, words in (
        ({"name": "  "}, "blank"),
        ({"name": "x" * 201}, "200"),
        ({"name": "x", "action": "zap"}, "action"),
    ):
        response = client.post(url, json=body, headers={"X-API-Key": KEY})
        assert response.status_code == 422 and words in response.json()["detail"]
    assert client.post("/api/images/999999/tags", json={"name": "x"}, headers={"X-API-Key": KEY}).status_code == 404
    assert [t["tag"] for t in client.get(url).json()["tags"]] == ["circle", "red"]


class Entails:
    def load(self) -> None: ...

    def close(self) -> None: ...

    def judge(self, image, statement: str) -> dict[str, float]:
        return {"entailment": 0.7, "neutral": 0.2, "contradiction": 0.1} if "circle" in statement else {
            "entailment": 0.1, "neutral": 0.3, "contradiction": 0.6}  # fmt: skip


def test_check_a_statement(make_client, image_ids) -> None:
    client = make_client(entailer="ofa-ve:/unused")
    client.app.state.context.models._entailer._model = Entails()  # as if loaded
    url = f"/api/images/{image_ids['img_0001.png']}/entail"
    body = client.post(url, json={"statement": " a red circle "}).json()
    assert body["statement"] == "a red circle" and body["label"] == "entailment" and body["model"] == "ofa-ve:/unused"
    assert (body["entailment"], body["neutral"], body["contradiction"]) == (0.7, 0.2, 0.1)
    assert client.post(url, json={"statement": "a dog"}).json()["label"] == "contradiction"
    for bad in ({"statement": ""}, {"statement": "   "}, {"statement": "x" * 301}, {"question": "why"}):
        assert client.post(url, json=bad).status_code == 422
    assert 'id="entail-form"' in client.get(f"/images/{image_ids['img_0001.png']}").text
    assert client.get("/api/health").json()["entailer"] == "ofa-ve:/unused"


def test_no_entailer_hides_the_box_and_answers_404(make_client, image_ids) -> None:
    client = make_client()
    image_id = image_ids["img_0001.png"]
    response = client.post(f"/api/images/{image_id}/entail", json={"statement": "a dog"})
    assert response.status_code == 404 and "entailer" in response.json()["detail"]
    assert 'id="entail-form"' not in client.get(f"/images/{image_id}").text


def test_entailer_spec_is_checked_at_start_up(make_client) -> None:
    from pixsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="entailer"):
        make_client(entailer="blip-vqa:/x")


def test_entailment_with_a_tiny_ofa(make_client, image_ids, tiny_ofa_spec) -> None:
    client = make_client(entailer=tiny_ofa_spec)
    body = client.post(f"/api/images/{image_ids['img_0002.png']}/entail", json={"statement": "a red circle"}).json()
    assert abs(body["entailment"] + body["neutral"] + body["contradiction"] - 1) < 1e-6
    assert body["label"] == max(("entailment", "neutral", "contradiction"), key=body.__getitem__)
