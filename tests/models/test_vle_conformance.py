"""Native VLE against the conformance fixtures written by the original iflytek/VLE code.

Each fixture checkpoint is loaded strictly, the processor is run on the 12 (image, text) pairs and
every array of the matching .npz is compared: ids and masks exactly, pixels to 1e-6, model outputs
to 1e-4 (see fixtures/README.md, VLE section).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixsearch.errors import ModelLoadError, ModelNotFoundError
from pixsearch.models import create
from pixsearch.models.vle import Head, VleProcessor, load_vle

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PIXSEARCH_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
VLE_DIR = FIXTURES / "vle"
HEADS = {"vle-base": Head.BASE, "vle-itm": Head.ITM, "vle-vqa": Head.VQA, "vle-pbc": Head.PBC}
INPUT_ARRAYS = ("input_ids", "token_type_ids", "attention_mask")
ATOL = 1e-4
PIXEL_ATOL = 1e-6

pytestmark = pytest.mark.skipif(
    not (VLE_DIR / "manifest.json").exists(), reason=f"VLE conformance fixtures folder absent: {VLE_DIR}"
)


@pytest.fixture(scope="module")
def pairs() -> tuple[list[str], list[Image.Image]]:
    """The 12 (text, image) pairs in .npz row order: image i = 0..2, then text j = 0..3."""
    inputs = json.loads((FIXTURES / "inputs.json").read_text())
    images = [Image.open(FIXTURES / item["file"]).convert("RGB") for item in inputs["images"]]
    rows = [(i, j) for i in range(len(images)) for j in range(len(inputs["texts"]))]
    return [inputs["texts"][j] for _, j in rows], [images[i] for i, _ in rows]


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(VLE_DIR / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def _outputs(name: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        if HEADS[name] is not Head.BASE:
            return {"logits": model(**inputs).numpy()}
        fused = model(**inputs)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
        image = model.get_image_features(inputs["pixel_values"])
    return {
        "pooler_output": fused.pooler_output.numpy(),
        "text_embeds": fused.text_embeds.numpy(),
        "image_embeds": fused.image_embeds.numpy(),
        "text_features": text.numpy(),
        "image_features": image.numpy(),
    }


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_npz_array_matches(name: str, pairs: tuple[list[str], list[Image.Image]]) -> None:
    reference = _npz(name)
    texts, images = pairs
    inputs = VleProcessor.from_dir(VLE_DIR / name)(texts, images)
    model, report = load_vle(VLE_DIR / name, HEADS[name])
    assert report.dropped_buffers == [] and report.ignored_head_keys == []

    n_images, n_texts = 3, 4
    computed: dict[str, np.ndarray] = {
        "pair_image_index": np.repeat(np.arange(n_images), n_texts),
        "pair_text_index": np.tile(np.arange(n_texts), n_images),
        "pixel_values": inputs["pixel_values"].numpy(),
        **{key: inputs[key].numpy() for key in INPUT_ARRAYS},
        **_outputs(name, model, inputs),
    }
    assert set(computed) == set(reference), f"{name}: npz arrays {sorted(reference)} vs computed {sorted(computed)}"
    for key, expected in reference.items():
        got = computed[key]
        assert got.shape == expected.shape, f"{name}/{key}: shape {got.shape} != {expected.shape}"
        if expected.dtype.kind == "i":
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}/{key}")
        else:
            atol = PIXEL_ATOL if key == "pixel_values" else ATOL
            np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=f"{name}/{key}")


def _copy_with(tmp_path: Path, name: str, edit) -> Path:  # noqa: ANN001 - edit: state dict -> None
    target = tmp_path / name
    shutil.copytree(VLE_DIR / name, target)
    state = torch.load(target / "pytorch_model.bin", map_location="cpu", weights_only=True)
    edit(state)
    torch.save(state, target / "pytorch_model.bin")
    return target


def test_position_id_buffers_of_older_checkpoints_are_accepted(tmp_path: Path) -> None:
    def add_buffers(state: dict[str, torch.Tensor]) -> None:
        state["vle.vision_model.vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
        state["vle.text_model.embeddings.position_ids"] = torch.arange(64).unsqueeze(0)

    directory = _copy_with(tmp_path, "vle-itm", add_buffers)
    model, report = load_vle(directory, Head.ITM)
    assert sorted(report.dropped_buffers) == [
        "vle.text_model.embeddings.position_ids",
        "vle.vision_model.vision_model.embeddings.position_ids",
    ]
    reference, _ = load_vle(VLE_DIR / "vle-itm", Head.ITM)
    pixels = torch.zeros(1, 3, 64, 64)
    ids = torch.tensor([[1, 5, 159, 245, 2]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids, pixels), reference(ids, pixels), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda s: s.update({"vle.cross_modal_text_layers.0.stray.weight": torch.zeros(2)}), "stray.weight"),
        (lambda s: s.update({"surprise.bias": torch.zeros(2)}), "surprise.bias"),
        (lambda s: s.pop("itm_score.fc.bias"), "itm_score.fc.bias"),
        (lambda s: s.pop("vle.cross_modal_image_pooler.dense.weight"), "vle.cross_modal_image_pooler.dense.weight"),
    ],
    ids=["stray-backbone-key", "stray-top-level-key", "missing-head-key", "missing-backbone-key"],
)
def test_key_mismatch_raises_naming_the_key(tmp_path: Path, edit, named: str) -> None:  # noqa: ANN001
    directory = _copy_with(tmp_path, "vle-itm", edit)
    with pytest.raises(ModelLoadError, match=named.replace(".", r"\.")):
        load_vle(directory, Head.ITM)


def test_shape_mismatch_raises_naming_the_key(tmp_path: Path) -> None:
    directory = _copy_with(tmp_path, "vle-itm", lambda s: s.update({"itm_score.fc.weight": torch.zeros(3, 64)}))
    with pytest.raises(ModelLoadError, match=r"itm_score\.fc\.weight"):
        load_vle(directory, Head.ITM)


def test_head_checkpoint_loads_as_backbone_skipping_its_head() -> None:
    backbone, report = load_vle(VLE_DIR / "vle-pbc", Head.BASE)
    assert sorted(report.ignored_head_keys) == [
        f"pbc_classifier.{i}.{p}" for i in (0, 1, 3) for p in ("bias", "weight")
    ]
    with_head, _ = load_vle(VLE_DIR / "vle-pbc", Head.PBC)
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, with_head.state_dict()[f"vle.{key}"], rtol=0, atol=0)


def test_bare_backbone_checkpoint_lacks_a_head() -> None:
    with pytest.raises(ModelLoadError, match=r"missing 2 key\(s\): itm_score\.fc\.bias, itm_score\.fc\.weight"):
        load_vle(VLE_DIR / "vle-base", Head.ITM)


def test_missing_directory_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        create(f"vle-itm:{tmp_path / 'nowhere'}").load()


def test_directory_without_weights_raises_model_not_found(tmp_path: Path) -> None:
    directory = tmp_path / "vle-no-weights"
    shutil.copytree(VLE_DIR / "vle-vqa", directory)
    (directory / "pytorch_model.bin").unlink()
    with pytest.raises(ModelNotFoundError, match="no VLE weights"):
        create(f"vle-vqa:{directory}").load()
