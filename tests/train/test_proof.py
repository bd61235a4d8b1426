"""The proof: tiny models trained from scratch on the synthetic world retrieve held-out scenes far
above chance, through the product path (Indexer, SearchService, RerankService).

Figures of one run are written to `figures.json` in the test's temporary folder and logged.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import torch

from pixsearch.imageio import load_image
from pixsearch.indexer import Indexer, IndexOptions
from pixsearch.models import Role, create
from pixsearch.rerank import Fusion, RerankOptions, RerankService
from pixsearch.search import SearchService
from pixsearch.storage import Library
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TINY_RERANKER, TrainJob, TrainOptions, run_job

log = logging.getLogger(__name__)

CLIP_STEPS = 250
ITM_STEPS = 700


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("proof")
    data = root / "data"
    write_dataset(data, SynthOptions(seed=0, train=800, val=0, test=120, image_size=32, twin_fraction=0.5))
    started = time.perf_counter()
    clip = run_job(
        TrainJob(
            "clip",
            data / "captions.jsonl",
            root / "clip",
            batch_size=64,
            options=TrainOptions(steps=CLIP_STEPS, lr=1e-3, warmup=30, checkpoint_every=10_000),
        )
    )
    itm = run_job(
        TrainJob(
            "blip-itm",
            data / "captions.jsonl",
            root / "itm",
            batch_size=32,
            miner=f"clip:{root / 'clip'}",
            negatives=data / "negatives.jsonl",
            tiny=TINY_RERANKER,
            options=TrainOptions(steps=ITM_STEPS, lr=1e-3, warmup=30, checkpoint_every=10_000),
        )
    )
    library = Library.open(root / "library")
    encoder = create(f"clip:{root / 'clip'}", Role.DUAL_ENCODER)
    logit_scale = encoder.logit_scale
    report = Indexer(library, encoder, IndexOptions(workers=0)).run([data / "images" / "test"])
    return {
        "root": root,
        "data": data,
        "library": library,
        "images": report.embedded,
        "logit_scale": logit_scale,
        "figures": {
            "clip_seconds": clip.seconds,
            "itm_seconds": itm.seconds,
            "total_seconds": time.perf_counter() - started,
        },
    }


def _queries(data: Path, name: str, split: str = "test") -> list[dict]:
    rows = [json.loads(line) for line in (data / name).read_text().splitlines()]
    return [row for row in rows if row["split"] == split]


def _r_at_1(world: dict, queries: list[tuple[str, str]], rerank: RerankService | None) -> float:
    search = SearchService(world["library"])
    hits = 0
    for query, image in queries:
        found = search.text_to_image(query, k=16)
        if rerank is not None:
            found = rerank.rerank_images(query, found)
        hits += Path(found[0].path) == (world["data"] / image)
    return hits / len(queries)


def _reranker(world: dict, fusion: Fusion) -> RerankService:
    spec = f"blip-itm:{world['root'] / 'itm'}"
    # the tiny reranker is weaker than the dual encoder at telling unrelated scenes apart: its logit
    # is added to the dual encoder's logit (similarity times CLIP's logit scale), not to the cosine
    options = RerankOptions(k=16, fusion=fusion, similarity_weight=world["logit_scale"])
    return RerankService(create(spec, Role.RERANKER), spec, world["root"], options)


def _record(world: dict, **figures: float) -> None:
    world["figures"].update(figures)
    (world["root"] / "figures.json").write_text(json.dumps(world["figures"], indent=2))
    log.warning("proof figures: %s", world["figures"])


def test_text_to_image_far_above_chance_on_held_out_scenes(world: dict) -> None:
    queries = [(row["caption"], row["image"]) for row in _queries(world["data"], "captions.jsonl")]
    chance = 1 / world["images"]
    dual = _r_at_1(world, queries, None)
    reranked = _r_at_1(world, queries, _reranker(world, Fusion.ITM_PLUS_SIMILARITY))
    itm_only = _r_at_1(world, queries, _reranker(world, Fusion.ITM))
    _record(world, chance=chance, r1_dual=dual, r1_reranked=reranked, r1_itm_only=itm_only, queries=len(queries))
    assert dual >= 15 * chance  # measured about 0.5-0.6 against a chance of ~0.01
    assert reranked >= 15 * chance
    assert reranked >= dual  # measured 0.585 against 0.563 (120 test scenes; 60 gave 0.670 against 0.636)
    # the reranker on its own (ITM logit only, over the dual encoder's top 16) must have learned to match
    assert itm_only >= 8 * chance


def test_reranker_beats_the_dual_encoder_on_swapped_attribute_queries(world: dict) -> None:
    rows = _queries(world["data"], "contrast.jsonl")
    queries = [(row["query"], row["image"]) for row in rows]
    # the reranker on its own tells a scene from its twin (one attribute swapped, or the relation
    # reversed) more often than the coin flip a bag of words gets
    reranker = create(f"blip-itm:{world['root'] / 'itm'}", Role.RERANKER)
    right = 0
    for row in rows:
        scores = reranker.score(
            row["query"], [load_image(world["data"] / p) for p in (row["image"], row["distractor"])]
        )
        right += scores[0] > scores[1]
    dual = _r_at_1(world, queries, None)
    reranked = _r_at_1(world, queries, _reranker(world, Fusion.ITM_PLUS_SIMILARITY))
    _record(
        world,
        contrast_queries=len(queries),
        contrast_pairs_right=right / len(rows),
        contrast_r1_dual=dual,
        contrast_r1_reranked=reranked,
    )
    assert right / len(rows) >= 0.6  # measured 0.73 on 138 pairs; on 56 (60 test scenes) 0.68 and, elsewhere, 0.59
    assert reranked > dual  # measured 0.587 against 0.529 (60 test scenes: 0.571 against 0.536)
