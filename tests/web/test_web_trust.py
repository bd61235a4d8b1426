"""Results a person can trust: viewing photos does not move rankings, near-identical groups are shown
and can be opened, scores say what orders the results, and /docs works offline."""

from __future__ import annotations

import re
from pathlib import Path

from fakes import FAKE_SPECS, install_fakes

KEY = "secret-key-for-tests"


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


def test_viewing_photos_does_not_change_a_words_ranking(make_client, fresh_library: Path) -> None:
    client = make_client(library=fresh_library, api_key=KEY, keyword_weight=1.0, **FAKE_SPECS)
    fakes = install_fakes(client.app)
    fakes.caption = lambda images: ["red blue square a small green triangle"]  # a captioner that says it all
    queries = ("red", "blue square", "a small green triangle")
    before = {q: _ids(client.get("/api/search", params={"q": q, "k": 30})) for q in queries}
    for image_id in before["red"][-3:]:  # open the pages of the last results, as a writer would
        assert client.get(f"/images/{image_id}").status_code == 200
        made = client.post(f"/api/images/{image_id}/caption", json={}, headers={"X-API-Key": KEY})
        assert made.status_code == 200 and made.json()["stored"] is True
    after = {q: _ids(client.get("/api/search", params={"q": q, "k": 30})) for q in queries}
    assert after == before
    # a caption a person wrote is theirs to search by
    person = before["red"][-1]
    wrote = client.post(
        f"/api/images/{person}/caption", json={"caption": "grandma's red kite"}, headers={"X-API-Key": KEY}
    )
    assert wrote.status_code == 200
    assert _ids(client.get("/api/search", params={"q": '"red kite"', "k": 30})) == [person]


def test_near_identical_results_are_counted_and_can_be_opened(make_client, image_ids) -> None:
    client = make_client(duplicate_threshold=0.9999)
    body = client.get("/api/search", params={"q": "shapes", "k": 50}).json()
    grouped = [hit for hit in body["hits"] if hit["duplicate_ids"]]
    original, copy = image_ids["img_0000.png"], image_ids["copy_of_img_0000.png"]
    assert len(grouped) == 1 and {grouped[0]["id"], *grouped[0]["duplicate_ids"]} == {original, copy}
    member = grouped[0]["duplicate_ids"][0]
    page = client.get("/", params={"q": "shapes", "k": 48}).text
    card = page[page.index(f'href="/images/{grouped[0]["id"]}"') :]
    card = card[: card.index("</li>")]
    assert "+1 near-identical" in card and "<details" in card and "<summary" in card
    assert f'href="/images/{member}"' in card and f"/api/images/{member}/thumbnail" in card  # shown in place


def test_filter_matches_show_no_score(make_client) -> None:
    client = make_client()
    body = client.get("/api/search", params={"q": "orientation:landscape", "k": 50}).json()
    assert body["hits"] and {(h["score"], h["match"]) for h in body["hits"]} == {(None, "filter")}
    page = client.get("/", params={"q": "orientation:landscape"}).text
    assert "filter match" in page and "0.000" not in page
    nothing = client.get("/", params={"q": "orientation:portrait"}).text  # every photo is landscape or square
    assert "no photo matches the filters orientation:portrait" in nothing and "relevance cut-off" not in nothing


def test_grid_shows_the_score_that_orders_the_results(make_client, fresh_library: Path, image_ids) -> None:
    from pixsearch.storage import Library
    from pixsearch.storage.annotations import set_ocr_text

    library = Library.open(fresh_library)
    with library.session() as session:  # a keyword match lifts a photo above its similarity rank
        set_ocr_text(session, image_ids["img_0007.png"], "shapes everywhere", "test")
    library.close()
    client = make_client(library=fresh_library, keyword_weight=1.0)
    hits = client.get("/api/search", params={"q": "shapes", "k": 24}).json()["hits"]
    shown = [hit["ranking_score"] for hit in hits]
    assert shown == sorted(shown, reverse=True) and hits[0]["fused_score"] is not None
    page = client.get("/", params={"q": "shapes", "k": 24}).text
    on_cards = [float(v) for v in re.findall(r'<span class="score"[^>]*>(-?[0-9.]+)</span>', page)]
    assert on_cards == sorted(on_cards, reverse=True) and len(on_cards) == len(hits)
    assert "similarity" in page


def test_docs_work_offline_from_assets_the_app_serves(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", page.text), "an asset from another host"
    assets = re.findall(r"(?:src|href)=[\"']?(/[^\"' >]+)", page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        loaded = client.get(asset)
        assert loaded.status_code == 200 and len(loaded.content) > 100, asset
    assert "openapi.json" in page.text and client.get("/openapi.json").status_code == 200
