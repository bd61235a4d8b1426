from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from images import draw, write_folder

from pixsearch.errors import ConfigError, EmptyIndexError, NotFoundError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.indexer.texts import index_texts
from pixsearch.models import create
from pixsearch.search import SearchService
from pixsearch.storage import Library


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, clip_spec: str) -> tuple[Library, list[Path]]:
    root = tmp_path_factory.mktemp("search")
    paths = write_folder(root / "photos", 24)
    library = Library.open(root / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0, batch_size=8)).run([root / "photos"])
    captions = root / "captions.txt"
    captions.write_text("a red circle\na blue square\n\na small green triangle\na red circle\n", encoding="utf-8")
    index_texts(library, create(clip_spec), captions)
    return library, paths


def test_text_search_returns_k_ranked_hits(indexed) -> None:
    library, paths = indexed
    hits = SearchService(library).text_to_image("a red circle", k=5)
    assert len(hits) == 5
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert {hit.path for hit in hits} <= {str(p) for p in paths}


def test_indexed_image_finds_itself_first(indexed) -> None:
    library, paths = indexed
    service = SearchService(library)
    for seed in (0, 7, 23):
        hits = service.image_to_image(draw(seed), k=3)
        assert hits[0].path == str(paths[seed])
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_paging_continues_the_ranking(indexed) -> None:
    library, _ = indexed
    service = SearchService(library)
    full = service.text_to_image("shapes", k=10)
    page = service.text_to_image("shapes", k=5, offset=5)
    assert [h.image_id for h in page] == [h.image_id for h in full[5:10]]


def test_more_like_this_excludes_the_image(indexed) -> None:
    library, _ = indexed
    service = SearchService(library)
    first = service.text_to_image("anything", k=1)[0]
    similar = service.similar_to(first.image_id, k=4)
    assert len(similar) == 4 and first.image_id not in {h.image_id for h in similar}
    with pytest.raises(NotFoundError):
        service.similar_to(10**9)


def test_image_to_text(indexed, clip_spec: str) -> None:
    library, _ = indexed
    service = SearchService(library)
    hits = service.image_to_text(draw(3), k=10)
    assert sorted(hit.text for hit in hits) == ["a blue square", "a red circle", "a small green triangle"]
    encoder = create(clip_spec)
    expected = encoder.encode_texts([h.text for h in hits]) @ encoder.encode_images([draw(3)])[0]
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-4)


@pytest.mark.parametrize("k, offset", [(0, 0), (1001, 0), (5, -1)])
def test_bad_k_or_offset(indexed, k: int, offset: int) -> None:
    with pytest.raises(ConfigError):
        SearchService(indexed[0]).text_to_image("dog", k=k, offset=offset)


def test_empty_query_and_empty_library(tmp_path: Path, indexed) -> None:
    with pytest.raises(ConfigError, match="empty query"):
        SearchService(indexed[0]).text_to_image("   ")
    with pytest.raises(EmptyIndexError, match="pixsearch index"):
        SearchService(Library.open(tmp_path / "empty")).text_to_image("dog")


def test_stale_index_file_is_rebuilt_for_readers(indexed) -> None:
    library, _ = indexed
    service = SearchService(library)
    before = [h.image_id for h in service.text_to_image("circle", k=5)]
    with library.session() as session:
        model = library.active_model(session)
    library.index_path("images", model.key).write_bytes(b"garbage")
    assert [h.image_id for h in SearchService(library).text_to_image("circle", k=5)] == before


def test_chinese_clip_library_end_to_end(tmp_path: Path) -> None:
    from tiny_models import save_tiny_chinese_clip

    spec = f"chinese-clip:{save_tiny_chinese_clip(tmp_path / 'cn')}"
    paths = write_folder(tmp_path / "photos", 5)
    library = Library.open(tmp_path / "library")
    Indexer(library, create(spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    service = SearchService(library)
    hits = service.text_to_image("一只狗在海滩上", k=5)
    encoder = create(spec)
    expected = encoder.encode_images([draw(i) for i in range(5)]) @ encoder.encode_texts(["一只狗在海滩上"])[0]
    assert [h.path for h in hits] == [str(paths[i]) for i in np.argsort(-expected, kind="stable")]
    assert service.image_to_image(draw(2), k=1)[0].path == str(paths[2])


def test_a_query_sees_one_state_of_the_library(indexed) -> None:
    library, _ = indexed
    service = SearchService(library)
    with library.session() as session:
        key = library.active_model(session).key
    with service.pinned():
        index = service.index("images")
        with library.session() as session:  # an indexer elsewhere commits a new index generation
            library.bump_generation(session, "images", key)
        assert service.index("images") is index  # the query in flight keeps the index it began with
    assert service.index("images") is not index  # the next one loads the new generation
