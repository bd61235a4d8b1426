"""Reranking in bfloat16, what 'auto' gives on CPUs with AMX or AVX-512 BF16: every cache path runs, the
scores come back as float32 numbers, and the trained demo reranker ranks as it does in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixsearch.evaluation.readers import read_pairs
from pixsearch.models import ModelOptions, Role, create
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.search.results import ImageHit
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import demo_recipe as recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ITM = f"blip-itm:{recipe.PACKAGED / 'blip-itm'}"


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a of two score lists over the same items (1: the same order)."""
    upper = np.triu_indices(len(a), 1)
    return float(np.mean(np.sign(np.subtract.outer(a, a)[upper]) * np.sign(np.subtract.outer(b, b)[upper])))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[str]]:
    root = tmp_path_factory.mktemp("bf16-world")
    write_dataset(root, SynthOptions(seed=7, train=0, val=0, test=16, image_size=64, twin_fraction=0.5))
    pairs = read_pairs(root / "captions.jsonl").only("test").pairs
    images = sorted({Path(pair.image) for pair in pairs})[:16]
    return [path if path.is_absolute() else root / path for path in images], [pair.caption for pair in pairs[:20]]


def _scores(dtype: str, world, root: Path) -> list[np.ndarray]:
    """Each caption's ITM scores of the images, through the rerank service: the first caption with
    nothing cached (photos read, features on disk), the rest from cached keys/values."""
    images, captions = world
    reranker = create(ITM, Role.RERANKER, ModelOptions(device="cpu", dtype=dtype))
    options = RerankOptions(k=len(images), fusion=Fusion.ITM, disk_cache=True)
    service = RerankService(reranker, ITM, root, options)
    hits = [ImageHit(i, str(path), 0.0, 0, 0, content_hash=f"h{i}") for i, path in enumerate(images)]
    out = []
    for caption in captions:
        by_id = {hit.image_id: hit.rerank_score for hit in service.rerank_images(caption, hits)}
        out.append(np.array([by_id[i] for i in range(len(images))]))
    assert len(service.states) == len(images) and all((hit.image_id, hit.content_hash) in service.disk for hit in hits)
    # a fresh service reads the features back from the disk cache (float16 there) and scores the same
    again = RerankService(create(ITM, Role.RERANKER, ModelOptions(device="cpu", dtype=dtype)), ITM, root, options)
    by_id = {hit.image_id: hit.rerank_score for hit in again.rerank_images(captions[0], hits)}
    np.testing.assert_allclose([by_id[i] for i in range(len(images))], out[0], rtol=0, atol=0.05)
    return out


def test_bf16_reranking_ranks_as_float32_does(world, tmp_path: Path) -> None:
    reranker = create(ITM, Role.RERANKER, ModelOptions(dtype="bfloat16"))
    reranker.load()
    assert reranker._blip.dtype == torch.bfloat16
    exact = _scores("float32", world, tmp_path / "float32")
    fast = _scores("bfloat16", world, tmp_path / "bfloat16")
    assert all(np.isfinite(scores).all() and scores.dtype == np.float64 for scores in fast)
    taus = [kendall_tau(a, b) for a, b in zip(exact, fast, strict=True)]
    spread = float(np.mean([scores.std() for scores in exact]))
    largest = max(float(np.abs(a - b).max()) for a, b in zip(exact, fast, strict=True))
    # measured: mean tau 0.98 over 16 images, least 0.95; largest difference 0.06 logit with a spread of 1.4
    assert np.mean(taus) >= 0.95, (taus, largest, spread)
    assert largest < 0.1 * spread
