from __future__ import annotations

import numpy as np
from PIL import Image

from pixsearch.models.preprocess import ImageTransform, apply_transform, shortest_edge_size, transform_id


def test_shortest_edge_keeps_aspect() -> None:
    assert shortest_edge_size(400, 300, 224) == (298, 224)
    assert shortest_edge_size(300, 400, 224) == (224, 298)


def test_shortest_crop_output_shape_and_normalisation() -> None:
    image = Image.new("RGB", (100, 60), (255, 255, 255))
    pixels = apply_transform(ImageTransform(32), image)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.float32
    expected = (1.0 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(pixels[:, 10, 10], expected, rtol=1e-5)


def test_squash_ignores_aspect() -> None:
    pixels = apply_transform(ImageTransform(16, "squash", mean=(0.5,) * 3, std=(0.5,) * 3), Image.new("L", (50, 10), 0))
    assert pixels.shape == (3, 16, 16)
    np.testing.assert_allclose(pixels, -1.0)


def test_transform_id_changes_with_any_field() -> None:
    base = ImageTransform(224)
    assert transform_id(base) == transform_id(ImageTransform(224))
    assert transform_id(base) != transform_id(ImageTransform(224, "squash"))
    assert transform_id(base) != transform_id(ImageTransform(256))
