"""Word queries in the web app go through hybrid search: the query language, keyword fusion,
the relevance cut-off and near-duplicate grouping."""

from __future__ import annotations

from pathlib import Path

from pixsearch.storage import Library
from pixsearch.storage.annotations import set_ocr_text, set_tag_state


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [Path(h["path"]).name for h in response.json()["hits"]]


def test_filters_phrases_and_exclusions_through_the_api(make_client, library_dir: Path, image_ids) -> None:
    library = Library.open(library_dir)
    with library.session() as session:
        set_tag_state(session, image_ids["img_0004.png"], "kite festival", "confirmed")
        set_ocr_text(session, image_ids["img_0005.png"], "EXIT 24 Springfield", "test")
    client = make_client()
    assert _names(client.get("/api/search", params={"q": "tag:kite_festival", "k": 10})) == ["img_0004.png"]
    assert _names(client.get("/api/search", params={"q": '"exit 24"', "k": 10})) == ["img_0005.png"]
    everything = _names(client.get("/api/search", params={"q": "shapes", "k": 50}))
    assert "img_0005.png" in everything
    assert "img_0005.png" not in _names(client.get("/api/search", params={"q": "shapes -springfield", "k": 50}))
    bad = client.get("/api/search", params={"q": "after:someday"})
    assert bad.status_code == 400 and "YYYY" in bad.json()["detail"]


def test_near_duplicates_collapse_and_cut_off_says_no_good_match(make_client) -> None:
    grouped = make_client(duplicate_threshold=0.9999).get("/api/search", params={"q": "shapes", "k": 50})
    names = _names(grouped)
    assert ("img_0000.png" in names) != ("copy_of_img_0000.png" in names)  # the copy folds into its original
    strict = make_client(min_score=0.9999, cutoff_z=2.0).get("/api/search", params={"q": "shapes"})
    assert strict.json()["no_good_match"] is True and strict.json()["hits"] == []
    page = make_client(min_score=0.9999, cutoff_z=2.0).get("/", params={"q": "shapes"})
    assert page.status_code == 200 and "relevance cut-off" in page.text
