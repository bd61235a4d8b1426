"""`pixsearch eval --sweep-sim-weights`: recall at several itm+sim weights from one set of reranker
scores, each what a separate run at that weight reports, so a weight can be chosen on held-out pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pixsearch.cli import main
from pixsearch.evaluation.readers import read_pairs
from pixsearch.evaluation.run import EvalOptions, evaluate_retrieval
from pixsearch.models import ModelOptions, Role, create
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import demo_recipe as recipe

CLIP, ITM = f"clip:{recipe.PACKAGED / 'clip'}", f"blip-itm:{recipe.PACKAGED / 'blip-itm'}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sweep-world")
    write_dataset(root, SynthOptions(seed=5, train=0, val=0, test=24, image_size=64, twin_fraction=0.5))
    return root


def test_each_swept_weight_gives_what_a_run_at_that_weight_gives(data: Path) -> None:
    options = ModelOptions(device="cpu", dtype="float32")
    encoder, reranker = create(CLIP, Role.DUAL_ENCODER, options), create(ITM, Role.RERANKER, options)
    pairs = read_pairs(data / "captions.jsonl").only("test")
    weights = (0.0, 2.0, float(encoder.logit_scale), 1000.0)
    swept = evaluate_retrieval(pairs, encoder, (reranker, ITM), EvalOptions(rerank_k=8, sweep=weights))
    assert list(swept["rerank_sweep"]) == [f"{w:g}" for w in weights]
    seen = set()
    for weight in (0.0, float(encoder.logit_scale), 1000.0):
        alone = evaluate_retrieval(pairs, encoder, (reranker, ITM), EvalOptions(rerank_k=8, similarity_weight=weight))
        row = swept["rerank_sweep"][f"{weight:g}"]
        assert row["text_to_image"] == alone["text_to_image_reranked"]
        assert row["image_to_text"] == alone["image_to_text_reranked"]
        seen.add(row["text_to_image"]["R@1"])
    assert len(seen) > 1  # the weight matters on this data: the sweep is not one figure repeated


def test_the_cli_prints_the_sweep_and_names_a_bad_weight(data: Path, tmp_path: Path, capsys) -> None:
    args = ["eval", "--data", str(data / "captions.jsonl"), "--model", CLIP, "--rerank", ITM, "--rerank-k", "8"]
    args += ["--threads", "1", "--json", str(tmp_path / "r.json")]
    assert main([*args, "--sweep-sim-weights", "0, logit-scale,8"]) == 0
    table = capsys.readouterr().out
    assert (
        "retrieval rerank_sweep 0 text_to_image R@1" in table and "retrieval rerank_sweep 8 image_to_text R@1" in table
    )
    saved = json.loads((tmp_path / "r.json").read_text())["retrieval"]["rerank_sweep"]
    assert len(saved) == 3
    assert main([*args, "--sweep-sim-weights", "4,heavy"]) == 2
    assert "--sweep-sim-weights" in capsys.readouterr().err
    assert main([*args, "--fusion", "itm", "--sweep-sim-weights", "4"]) == 2
    assert "--fusion itm+sim" in capsys.readouterr().err
