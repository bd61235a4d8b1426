from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from images import write_folder
from sqlalchemy import select

from pixsearch.errors import ConfigError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.search.duplicates import find_duplicates
from pixsearch.search.engine import SearchOptions, hybrid_search
from pixsearch.storage import Library
from pixsearch.storage.annotations import set_caption, set_ocr_text, set_tag_state, suggest_tags
from pixsearch.storage.schema import Embedding, ImageRow

EVERYTHING = SearchOptions(cutoff_z=None, duplicate_threshold=None)  # tiny random models: no cut-off


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, clip_spec: str):
    root = tmp_path_factory.mktemp("hybrid")
    trips = write_folder(root / "photos" / "trips", 6)
    write_folder(root / "photos" / "home", 6, start=6)
    shutil.copy(trips[0], root / "photos" / "home" / "copy_of_trip.png")
    library = Library.open(root / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0, batch_size=8)).run([root / "photos"])
    with library.session() as session:
        ids = {Path(r.path).name: r.id for r in session.execute(select(ImageRow)).scalars()}
        for i, row in enumerate(session.execute(select(ImageRow).order_by(ImageRow.id)).scalars()):
            row.taken_at = datetime(2018 + i % 6, 1 + i % 12, 1)
            row.camera = "Canon EOS 5D" if i % 2 else "FUJIFILM X100"
            row.width, row.height = (40, 60) if i % 3 == 0 else (60, 40)
        suggest_tags(session, ids["img_0001.png"], [("beach", 0.9), ("dog", 0.8)], "zero-shot")
        set_tag_state(session, ids["img_0007.png"], "beach", "confirmed")
        set_ocr_text(session, ids["img_0008.png"], "EXIT 24 Springfield", "rapidocr")
        set_caption(session, ids["img_0003.png"], "person", "a yellow kite over the dunes")  # a person's: searchable
    return library, ids


def _names(result) -> list[str]:
    return [Path(h.path).name for h in result.hits]


def test_tag_filter(world) -> None:
    library, _ = world
    result = hybrid_search(SearchService(library), "tag:beach", k=10, options=EVERYTHING)
    assert sorted(_names(result)) == ["img_0001.png", "img_0007.png"]


def test_date_camera_folder_orientation_filters(world) -> None:
    library, _ = world
    service = SearchService(library)
    with library.session() as session:
        rows = session.execute(select(ImageRow)).scalars().all()
    expect = {
        "after:2021 before:2023": lambda r: datetime(2021, 1, 1) <= r.taken_at < datetime(2023, 1, 1),
        "camera:canon": lambda r: r.camera.startswith("Canon"),
        "folder:trips": lambda r: "/trips/" in r.path,
        "orientation:portrait": lambda r: r.height > r.width,
        "orientation:landscape camera:fuji": lambda r: r.width > r.height and r.camera.startswith("FUJI"),
    }
    for query, keep in expect.items():
        got = sorted(_names(hybrid_search(service, query, k=50, options=EVERYTHING)))
        assert got == sorted(Path(r.path).name for r in rows if keep(r)), query
    got = _names(hybrid_search(service, "has:text", k=50, options=EVERYTHING))
    assert got == ["img_0008.png"]


def test_filters_combined_with_words_keep_recall(world) -> None:
    library, _ = world
    service = SearchService(library)
    vector_only = hybrid_search(service, "shapes", k=50, options=EVERYTHING)
    filtered = hybrid_search(service, "shapes folder:trips", k=50, options=EVERYTHING)
    expected = [n for n in _names(vector_only) if n in {f"img_{i:04d}.png" for i in range(6)}]
    assert _names(filtered) == expected  # the same order, nothing lost to the filter


def test_phrase_must_match_and_reaches_ocr_and_captions(world) -> None:
    library, _ = world
    service = SearchService(library)
    assert _names(hybrid_search(service, '"exit 24"', k=5, options=EVERYTHING)) == ["img_0008.png"]
    assert _names(hybrid_search(service, '"yellow kite"', k=5, options=EVERYTHING)) == ["img_0003.png"]
    assert _names(hybrid_search(service, '"no such words here"', k=5, options=EVERYTHING)) == []


def test_keyword_match_is_fused_into_the_ranking(world) -> None:
    library, _ = world
    service = SearchService(library)
    vector_only = hybrid_search(
        service, "springfield", k=12, options=SearchOptions(cutoff_z=None, duplicate_threshold=None, keyword_weight=0)
    )
    fused = hybrid_search(service, "springfield", k=12, options=EVERYTHING)
    assert _names(fused)[0] == "img_0008.png" or _names(fused).index("img_0008.png") < _names(vector_only).index(
        "img_0008.png"
    )
    assert fused.hits[_names(fused).index("img_0008.png")].keyword_score is not None


def test_exclusion(world) -> None:
    library, _ = world
    names = _names(hybrid_search(SearchService(library), "shapes -springfield -beach", k=50, options=EVERYTHING))
    assert not {"img_0008.png", "img_0001.png", "img_0007.png"} & set(names) and len(names) == 10


def test_vector_arithmetic_and_weights_match_brute_force(world, clip_spec: str) -> None:
    library, _ = world
    service = SearchService(library)
    encoder = create(clip_spec)
    t = encoder.encode_texts(["cat", "hat", "dog"])
    for query, vector in [('"cat" + "hat" - "dog"', t[0] + t[1] - t[2]), ("3:cat dog", 3 * t[0] + t[2])]:
        vector = vector / np.linalg.norm(vector)
        with library.session() as session:
            rows = session.execute(select(ImageRow.path, Embedding.vector).join(Embedding)).all()
        scores = {Path(p).name: float(np.frombuffer(v, dtype=np.float32) @ vector) for p, v in rows}
        vectors_only = SearchOptions(cutoff_z=None, duplicate_threshold=None, keyword_weight=0)  # "dog" is also a tag
        got = hybrid_search(service, query, k=5, options=vectors_only)
        best = sorted(scores.values(), reverse=True)[:5]  # compare scores: the copy ties with its original
        np.testing.assert_allclose([h.score for h in got.hits], best, atol=1e-5)
        assert all(scores[Path(h.path).name] == pytest.approx(h.score, abs=1e-5) for h in got.hits)


def test_relevance_cut_off_says_no_good_match(world) -> None:
    library, _ = world
    result = hybrid_search(SearchService(library), "anything at all", k=5, options=SearchOptions(min_score=0.9999))
    assert result.no_good_match and result.hits == []
    assert not hybrid_search(SearchService(library), "anything at all", k=5, options=EVERYTHING).no_good_match


def test_near_duplicates_are_grouped(world) -> None:
    library, _ = world
    service = SearchService(library)
    grouped = hybrid_search(service, "shapes", k=50, options=SearchOptions(cutoff_z=None, duplicate_threshold=0.9999))
    names = _names(grouped)
    assert ("img_0000.png" in names) != ("copy_of_trip.png" in names)
    kept = grouped.hits[names.index("img_0000.png" if "img_0000.png" in names else "copy_of_trip.png")]
    assert kept.duplicates == 1 and len(names) == 12
    member = kept.near_identical[0]  # the grouped photo is kept with its group, and its id is in the JSON
    assert {Path(kept.path).name, Path(member.path).name} == {"img_0000.png", "copy_of_trip.png"}
    assert kept.to_json()["duplicate_ids"] == [member.image_id]
    groups = find_duplicates(service, threshold=0.9999)
    assert [sorted(Path(h.path).name for h in g) for g in groups] == [["copy_of_trip.png", "img_0000.png"]]


def test_empty_query_is_refused(world) -> None:
    with pytest.raises(ConfigError, match="empty query"):
        hybrid_search(SearchService(world[0]), "   ")
