"""Explicit negative captions for the reranker: reading them (bad rows named) and training with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pixsearch.errors import ConfigError
from pixsearch.evaluation.readers import BadRowPolicy, DataSetError, read_negatives
from pixsearch.models import Role, create
from pixsearch.synth import SynthOptions, write_dataset
from pixsearch.train import TinyConfig, TrainJob, TrainOptions, run_job
from pixsearch.train.data import TrainData, attach_negatives

TINY = TinyConfig(image_size=16, patch_size=8, hidden=32, layers=1, heads=2, projection_dim=16)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("negatives-world")
    write_dataset(root, SynthOptions(seed=2, train=16, val=0, test=4, image_size=32, twin_fraction=0.5))
    return root


def _train_data(world: Path) -> TrainData:
    rows = [json.loads(line) for line in (world / "captions.jsonl").read_text().splitlines()]
    grouped: dict[Path, list[str]] = {}
    for row in rows:
        if row["split"] == "train":
            grouped.setdefault(world / row["image"], []).append(row["caption"])
    images = list(grouped)
    return TrainData(images, np.zeros((len(images), 3, 4, 4), np.float32), [grouped[i] for i in images])


def test_the_synthetic_negatives_attach_to_their_training_images(world: Path) -> None:
    data = _train_data(world)
    kept = attach_negatives(data, world / "negatives.jsonl")
    rows = [json.loads(line) for line in (world / "negatives.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row["split"] == "train"]
    assert kept == len({(row["image"], row["negative"]) for row in train_rows})  # test-split rows are not used
    for captions, pairs in zip(data.captions, data.negatives, strict=True):
        assert pairs and all(true == captions[0] and false not in captions for true, false in pairs)
        # a colour, size or shape swap keeps the caption's words: only their order tells them apart
        kept_words = [false for true, false in pairs if sorted(false.split()) == sorted(true.split())]
        assert len(kept_words) == len(pairs) - 1  # all but the relation swap


def test_bad_negative_rows_are_named_and_stop_or_are_skipped(world: Path) -> None:
    data = _train_data(world)
    first = data.images[0].relative_to(world)
    lines = [
        json.dumps({"image": str(first), "negative": "a small green circle above a large red square"}),
        "{broken",
        json.dumps({"image": str(first), "negative": data.captions[0][0]}),
        json.dumps({"image": str(first)}),
        json.dumps({"image": str(first), "negative": "a red square", "caption": "a caption of another image"}),
    ]
    path = world / "bad_negatives.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataSetError) as error:
        attach_negatives(data, path, policy=BadRowPolicy.STOP)
    message = str(error.value)
    assert f"{path}, line 2: not valid JSON" in message
    assert f"{path}, line 3: {world / first}: the negative is one of the image's own captions" in message
    assert f"{path}, line 4: needs 'image' and 'negative'" in message
    assert (
        f"{path}, line 5: {world / first}: 'a caption of another image' is not one of the image's captions" in message
    )
    assert data.negatives == []  # nothing attached when the run is refused
    assert attach_negatives(data, path, policy=BadRowPolicy.SKIP) == 1
    assert data.negatives[0] == [(data.captions[0][0], "a small green circle above a large red square")]
    assert len(data.skipped) == 4


def test_a_negatives_file_needs_an_image_and_a_negative_column(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("image,caption\na.png,a red circle\n")
    with pytest.raises(ConfigError, match="a negative column"):
        read_negatives(tmp_path / "n.csv")
    (tmp_path / "n.txt").write_text("")
    with pytest.raises(ConfigError, match="csv or .jsonl"):
        read_negatives(tmp_path / "n.txt")


def test_reranker_trains_with_negatives_and_only_the_reranker_takes_them(world: Path, tmp_path: Path) -> None:
    options = TrainOptions(steps=3, lr=1e-3, warmup=1, checkpoint_every=100)
    data = world / "captions.jsonl"
    common = dict(tiny=TINY, batch_size=8, options=options)
    with pytest.raises(ConfigError, match="negatives file trains a blip-itm"):
        run_job(TrainJob("clip", data, tmp_path / "c", negatives=world / "negatives.jsonl", **common))
    run_job(TrainJob("clip", data, tmp_path / "clip", **common))
    report = run_job(
        TrainJob(
            "blip-itm",
            data,
            tmp_path / "itm",
            miner=f"clip:{tmp_path / 'clip'}",
            negatives=world / "negatives.jsonl",
            **common,
        )
    )
    assert report.steps == 3 and np.isfinite(report.final_loss)
    with pytest.raises(ConfigError, match="image ranking"):
        run_job(TrainJob("clip", data, tmp_path / "c2", image_ranked=3, **common))
    # a second stage from the first, each caption's image also ranked against images the miner confuses it with
    ranked = run_job(
        TrainJob(
            "blip-itm", data, tmp_path / "itm2", init=str(tmp_path / "itm"), miner=f"clip:{tmp_path / 'clip'}",
            image_ranked=3, **common,
        )
    )  # fmt: skip
    assert ranked.steps == 3 and np.isfinite(ranked.final_loss)
    # one step from the same model, batch and draws: the image ranking adds its cross-entropy to the loss
    one = dict(common, options=TrainOptions(steps=1, lr=1e-3, warmup=1, checkpoint_every=100))
    first = {
        n: run_job(
            TrainJob("blip-itm", data, tmp_path / f"one{n}", init=str(tmp_path / "itm"), miner=f"clip:{tmp_path / 'clip'}",
                     image_ranked=n, **one)
        ).final_loss
        for n in (0, 3)
    }  # fmt: skip
    assert first[3] > first[0]
    image = next((world / "images" / "test").glob("*.png"))
    from PIL import Image

    for model in ("itm", "itm2"):
        scores = create(f"blip-itm:{tmp_path / model}", Role.RERANKER).score("a red circle", [Image.open(image)])
        assert scores.shape == (1,) and np.isfinite(scores).all()
