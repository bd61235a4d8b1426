from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from images import draw, write_folder

from pixsearch.errors import ConfigError
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import Role, create
from pixsearch.rerank import Fusion, RerankOptions, RerankService, similarity_weight
from pixsearch.rerank.cache import DiskCache, MemoryCache, disk_usage, from_storage, parse_size, to_storage
from pixsearch.search import SearchService
from pixsearch.storage import Library

QUERY = "a red circle on a white background"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, clip_spec: str, tiny_blip_dirs):
    root = tmp_path_factory.mktemp("rerank")
    write_folder(root / "photos", 20)
    library = Library.open(root / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0, batch_size=8)).run([root / "photos"])
    spec = f"blip-itm:{tiny_blip_dirs['itm']}"
    reranker = create(spec, Role.RERANKER)
    hits = SearchService(library).text_to_image(QUERY, k=12)
    return library, spec, reranker, hits


def _expected_itm(reranker, hits) -> np.ndarray:
    from PIL import Image

    return reranker.score(QUERY, [Image.open(hit.path).convert("RGB") for hit in hits])


def test_rerank_reorders_by_fused_score(setup) -> None:
    library, spec, reranker, hits = setup
    service = RerankService(reranker, spec, library.root, RerankOptions(k=8))
    reranked = service.rerank_images(QUERY, hits)
    itm = _expected_itm(reranker, hits[:8])
    fused = itm + np.array([h.score for h in hits[:8]], dtype=np.float32)
    expected_order = [hits[i].image_id for i in np.argsort(-fused, kind="stable")]
    assert [h.image_id for h in reranked[:8]] == expected_order
    assert expected_order != [h.image_id for h in hits[:8]], "the reranker must disagree with the first stage here"
    by_id = {h.image_id: h for h in reranked}
    for i, hit in enumerate(hits[:8]):
        out = by_id[hit.image_id]
        assert out.first_stage_score == pytest.approx(hit.score)
        assert out.rerank_score == pytest.approx(float(itm[i]), abs=1e-4)
        assert out.score == pytest.approx(float(fused[i]), abs=1e-4)
    # candidates outside the top k keep their first-stage order, below the reranked ones
    assert [h.image_id for h in reranked[8:]] == [h.image_id for h in hits[8:]]
    assert all(h.rerank_score is None for h in reranked[8:])


def test_itm_only_fusion(setup) -> None:
    library, spec, reranker, hits = setup
    service = RerankService(reranker, spec, library.root, RerankOptions(k=6, fusion=Fusion.ITM))
    reranked = service.rerank_images(QUERY, hits[:6])
    for hit in reranked:
        assert hit.score == pytest.approx(hit.rerank_score)
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)


def test_similarity_weight_scales_the_first_stage_score(setup) -> None:
    library, spec, reranker, hits = setup
    weight = 40.0
    service = RerankService(reranker, spec, library.root, RerankOptions(k=8, similarity_weight=weight))
    for hit in service.rerank_images(QUERY, hits)[:8]:
        assert hit.score == pytest.approx(hit.rerank_score + weight * hit.first_stage_score, abs=1e-3)
    with pytest.raises(ConfigError, match="similarity weight"):
        RerankOptions(similarity_weight=-1.0)


def test_similarity_weight_from_the_dual_encoder(clip_spec: str) -> None:
    encoder = create(clip_spec, Role.DUAL_ENCODER)
    assert similarity_weight("logit-scale", encoder) == pytest.approx(encoder.logit_scale)
    assert similarity_weight("auto", encoder) == pytest.approx(encoder.logit_scale)
    assert similarity_weight("auto", object()) == 1.0  # no logit scale: LAVIS's weight
    assert similarity_weight("2.5") == 2.5 and similarity_weight(0) == 0.0
    with pytest.raises(ConfigError, match="needs a dual encoder with a logit scale"):
        similarity_weight("logit-scale", object())
    for bad in ("-1", "nan", "inf", "heavy"):
        with pytest.raises(ConfigError, match="similarity weight"):
            similarity_weight(bad, encoder)


@pytest.mark.parametrize(("state_bytes", "tier"), [(0, "memory"), (None, "states")])
def test_second_query_skips_the_vision_tower(setup, monkeypatch, state_bytes, tier) -> None:
    """Features come from the feature tier; with the state tier on, the keys/values tier serves first."""
    library, spec, reranker, hits = setup
    service = RerankService(reranker, spec, library.root, RerankOptions(k=5, state_cache_bytes=state_bytes))
    first = service.rerank_images(QUERY, hits[:5])
    calls = []
    original = reranker.image_features
    monkeypatch.setattr(reranker, "image_features", lambda images: calls.append(len(images)) or original(images))
    second = service.rerank_images(QUERY, hits[:5])
    assert calls == [] and getattr(service, tier).hits >= 5
    assert [h.image_id for h in first] == [h.image_id for h in second]
    assert [h.score for h in first] == pytest.approx([h.score for h in second], abs=1e-4)


def test_disk_cache_round_trip_in_float16(setup) -> None:
    library, spec, reranker, hits = setup
    options = RerankOptions(k=5, disk_cache=True)
    warm = RerankService(reranker, spec, library.root, options)
    assert warm.precompute(hits[:5]) == 5
    assert sum(disk_usage(library.root).values()) > 0
    cold = RerankService(reranker, spec, library.root, options)  # empty memory, features from disk
    scored = cold.rerank_images(QUERY, hits[:5])
    direct = {h.image_id: s for h, s in zip(hits[:5], _expected_itm(reranker, hits[:5]), strict=True)}
    for hit in scored:
        assert hit.rerank_score == pytest.approx(float(direct[hit.image_id]), abs=2e-2)
    assert cold.memory.misses == 5 and len(cold.memory) == 5


def test_a_filled_disk_cache_is_read_without_the_disk_cache_option(setup, monkeypatch) -> None:
    library, spec, reranker, hits = setup
    RerankService(reranker, spec, library.root, RerankOptions(disk_cache=True)).precompute(hits[:4])
    reader = RerankService(reranker, spec, library.root, RerankOptions(k=8, state_cache_bytes=0))
    with monkeypatch.context() as patch:
        patch.setattr(reranker, "image_features", lambda images: pytest.fail("the vision tower ran"))
        assert all(h.rerank_score is not None for h in reader.rerank_images(QUERY, hits[:4], k=4)[:4])
    files = sorted(reader.disk.folder.glob("*.pt"))
    reader.rerank_images(QUERY, hits[:12], k=12)  # features past the cached ones are computed...
    assert sorted(reader.disk.folder.glob("*.pt")) == files  # ...and not written without the option


def test_rerank_texts_scores_each_text_against_the_image(setup) -> None:
    library, spec, reranker, _ = setup
    from pixsearch.search.results import TextHit

    texts = [TextHit(i, t, "c", 0.1 * i) for i, t in enumerate(["a red circle", "a blue square", "green triangle"])]
    service = RerankService(reranker, spec, library.root, RerankOptions(k=3))
    reranked = service.rerank_texts(draw(1), texts)
    for hit in reranked:
        expected = reranker.score(hit.text, [draw(1)])[0] + hit.first_stage_score
        assert hit.score == pytest.approx(float(expected), abs=1e-4)


def test_memory_cache_is_bounded() -> None:
    cache = MemoryCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put((i, "h"), torch.zeros(100))
    assert len(cache) == 3 and cache.get((0, "h")) is None and cache.get((4, "h")) is not None


def test_storage_form_is_half_precision() -> None:
    feature = (torch.randn(4, 8), torch.arange(3))
    stored = to_storage(feature)
    assert stored[0].dtype == torch.float16 and stored[1].dtype == torch.int64
    assert from_storage(stored)[0].dtype == torch.float32


def test_torn_disk_file_is_recomputed(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put((1, "abc"), torch.ones(3))
    path = next(tmp_path.glob("*.pt"))
    path.write_bytes(b"torn")
    assert cache.get((1, "abc")) is None and not path.exists()


def test_bad_rerank_k() -> None:
    with pytest.raises(ConfigError, match="rerank k"):
        RerankOptions(k=0)


def test_a_library_reader_never_reranks_a_photo_swapped_for_a_link(tmp_path: Path, clip_spec: str, tiny_blip_dirs):
    import functools

    from pixsearch.photos import load_photo

    write_folder(tmp_path / "photos", 4)
    draw(77).save(tmp_path / "private.png")  # outside the library's folders
    library = Library.open(tmp_path / "library")
    Indexer(library, create(clip_spec), IndexOptions(workers=0)).run([tmp_path / "photos"])
    hits = SearchService(library).text_to_image(QUERY, k=4)
    swapped = Path(hits[0].path)
    swapped.unlink()
    swapped.symlink_to(tmp_path / "private.png")
    spec = f"blip-itm:{tiny_blip_dirs['itm']}"
    service = RerankService(
        create(spec, Role.RERANKER), spec, library.root, RerankOptions(k=4), functools.partial(load_photo, library)
    )
    reranked = service.rerank_images(QUERY, hits)
    # the private photo behind the link is never read: the hit is ranked last, unscored
    assert reranked[-1].image_id == hits[0].image_id and reranked[-1].rerank_score == float("-inf")
    assert all(np.isfinite(h.rerank_score) for h in reranked[:-1])
    library.close()


def test_disk_cache_stops_at_its_bound(tmp_path: Path) -> None:
    one = DiskCache(tmp_path / "probe")
    assert one.put((0, "h"), torch.ones(100)) and one.used_bytes > 200
    size = one.used_bytes
    cache = DiskCache(tmp_path / "bounded", max_bytes=2 * size + 10, spec="blip-itm:/models/x")
    assert cache.put((1, "a"), torch.ones(100)) and cache.put((2, "b"), torch.ones(100))
    assert not cache.put((3, "c"), torch.ones(100)) and (3, "c") not in cache
    assert cache.full and cache.used_bytes <= cache.max_bytes
    assert (tmp_path / "bounded" / "reranker.txt").read_text() == "blip-itm:/models/x"
    reopened = DiskCache(tmp_path / "bounded", max_bytes=2 * size + 10)  # counts what is on disk
    assert reopened.used_bytes == cache.used_bytes and not reopened.put((3, "c"), torch.ones(100))


def test_state_tier_is_bounded_by_bytes(setup) -> None:
    library, spec, reranker, hits = setup
    state_bytes = reranker.image_states(reranker.image_features([draw(0)]))[0].nbytes
    service = RerankService(reranker, spec, library.root, RerankOptions(k=6, state_cache_bytes=2 * state_bytes))
    first = service.rerank_images(QUERY, hits[:6])
    assert len(service.states) == 2 and service.states.bytes <= 2 * state_bytes
    again = service.rerank_images(QUERY, hits[:6])  # two from states, four from features: the same scores
    assert [h.score for h in again] == pytest.approx([h.score for h in first], abs=1e-4)
    assert service.states.hits == 2
    off = RerankService(reranker, spec, library.root, RerankOptions(k=6, state_cache_bytes=0))
    off.rerank_images(QUERY, hits[:6])
    assert len(off.states) == 0


@pytest.mark.parametrize(
    ("text", "size"),
    [("800", 800), ("500M", 500 * 10**6), ("2G", 2 * 10**9), ("1.5GiB", int(1.5 * 2**30)), ("3 kb", 3000)],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1G", "lots", "2X", "1e9"])
def test_a_bad_size_is_named(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a number of bytes"):
        parse_size(text)
