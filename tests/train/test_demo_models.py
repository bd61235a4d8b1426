"""The demo models that ship in the package: the files the manifest names, small, and good on the
synthetic world's held-out test split with the demo's own rerank settings (a lift, not a loss)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from pixsearch.synth import write_dataset
from pixsearch.train import demo_recipe as recipe

MAX_PACKAGE_BYTES = 8 * 2**20


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import torch

    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("world") / "data"
    write_dataset(data, recipe.WORLD)
    return recipe.measure(data, recipe.PACKAGED)


def test_packaged_files_are_the_manifests_and_small() -> None:
    manifest = recipe.read_manifest()
    assert recipe.digests(recipe.PACKAGED) == manifest["files"]
    assert {name.split("/")[0] for name in manifest["files"]} == set(recipe.BACKENDS)
    size = sum(path.stat().st_size for path in recipe.PACKAGED.rglob("*") if path.is_file())
    assert size <= MAX_PACKAGE_BYTES, f"demo models take {size / 2**20:.1f} MiB"


def test_text_to_image_far_above_chance_on_the_test_split(figures: dict) -> None:
    chance = 1 / figures["images"]
    assert figures["images"] > 100
    assert figures["text_to_image"]["R@1"] >= 30 * chance
    assert figures["image_to_text"]["R@1"] >= 30 * chance


def test_manifest_states_the_figures_measured_here(figures: dict) -> None:
    """The demo's summary line quotes the manifest; it must be what the shipped files give."""
    manifest = recipe.read_manifest()
    assert manifest["rerank"] == {"k": recipe.RERANK_K, "fusion": recipe.FUSION, "sim_weight": recipe.SIM_WEIGHT}
    for key in ("text_to_image", "text_to_image_reranked", "image_to_text", "image_to_text_reranked"):
        assert manifest["measured"][key]["R@1"] == pytest.approx(figures[key]["R@1"], abs=0.01), key
    assert figures["similarity_weight"] == pytest.approx(manifest["measured"]["similarity_weight"], rel=1e-3)


def test_demo_rerank_settings_lift_text_to_image_recall(figures: dict) -> None:
    """The demo's reranker at its own settings (the dual encoder's logit scale as the weight) raises
    text->image R@1 on the held-out test split by more than a few queries' worth, and did so on val,
    where the recipe was chosen, too."""
    before, after = figures["text_to_image"]["R@1"], figures["text_to_image_reranked"]["R@1"]
    assert after >= before + 0.02, f"rerank R@1 {after:.3f} against {before:.3f} without"
    val = recipe.read_manifest()["measured_val"]
    assert val["text_to_image_reranked"]["R@1"] >= val["text_to_image"]["R@1"] + 0.02


def test_manifest_commands_reproduce_the_figures_through_the_cli() -> None:
    synth, evaluate = recipe.read_manifest()["measured"]["commands"]
    assert synth == recipe.synth_command()
    assert evaluate.startswith("pixsearch eval --data DATA/captions.jsonl --split test --model clip:MODELS/clip")
    assert "--sim-weight logit-scale" in evaluate and "--rerank blip-itm:MODELS/blip-itm" in evaluate


def test_recipe_is_the_one_the_manifest_records() -> None:
    recorded = recipe.read_manifest()["recipe"]
    assert recorded["world"] == asdict(recipe.WORLD)
    assert [m["backend"] for m in recorded["models"]] == list(recipe.BACKENDS)
    assert [m["steps"] for m in recorded["models"]] == [m.steps for m in recipe.MODELS]
    assert recorded["threads"] == recipe.THREADS and recorded["seed"] == recipe.SEED


def test_package_data_is_declared() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"train/demo_models/*/*"' in pyproject and '"train/demo_models/*.json"' in pyproject
