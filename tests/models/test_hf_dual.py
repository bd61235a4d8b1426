from __future__ import annotations

import numpy as np
import pytest
from images import draw

from pixsearch.models import Tower, create
from pixsearch.models.hf_dual import transform_from_config
from pixsearch.models.preprocess import ImageTransform


@pytest.mark.parametrize("fixture", ["tiny_clip_dir", "tiny_siglip_dir"])
def test_embeddings_are_unit_float32(fixture: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(fixture)
    backend = "clip" if "clip" in fixture else "siglip"
    encoder = create(f"{backend}:{directory}")
    texts = encoder.encode_texts(["a red circle", "a blue square on a table"])
    images = encoder.encode_images([draw(1), draw(2), draw(3)])
    assert texts.dtype == np.float32 and images.dtype == np.float32
    assert texts.shape == (2, encoder.dim) and images.shape == (3, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_text_query_loads_only_the_text_tower(tiny_clip_dir) -> None:
    encoder = create(f"clip:{tiny_clip_dir}")
    encoder.encode_texts(["a dog"])
    assert encoder._text is not None and encoder._vision is None
    encoder.load_towers(Tower.IMAGE)
    assert encoder._vision is not None


def test_batching_does_not_change_vectors(tiny_clip_dir) -> None:
    encoder = create(f"clip:{tiny_clip_dir}")
    together = encoder.encode_images([draw(4), draw(5)])
    alone = encoder.encode_images([draw(5)])
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)


def test_transform_read_from_preprocessor_config(tiny_clip_dir, tiny_siglip_dir) -> None:
    default = ImageTransform(224)
    assert transform_from_config(tiny_clip_dir, default) == ImageTransform(32, "shortest-crop")
    siglip = transform_from_config(tiny_siglip_dir, default)
    assert (siglip.size, siglip.mode, siglip.mean) == (32, "squash", (0.5, 0.5, 0.5))


def test_chinese_clip_end_to_end(tmp_path) -> None:
    from tiny_models import save_tiny_chinese_clip

    directory = save_tiny_chinese_clip(tmp_path / "cn-clip")
    encoder = create(f"chinese-clip:{directory}")
    texts = encoder.encode_texts(["一只狗在海滩上", "红色的圆形"])
    images = encoder.encode_images([draw(1), draw(2)])
    assert texts.shape == (2, 16) and images.shape == (2, 16)
    assert not np.allclose(texts[0], texts[1])  # the Chinese characters reach the model
    assert encoder.transform.mode == "squash"


def test_clip_logit_scale_is_read_from_the_checkpoint(tiny_clip_dir) -> None:
    import math

    from safetensors.torch import load_file

    stored = float(load_file(tiny_clip_dir / "model.safetensors")["logit_scale"])
    assert create(f"clip:{tiny_clip_dir}").logit_scale == pytest.approx(math.exp(stored))
