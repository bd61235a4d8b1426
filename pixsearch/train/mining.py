"""Hard negatives mined by a dual encoder: for each image the captions of other images it scores
highest, and for each caption the other images it scores highest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pixsearch.imageio import load_image
from pixsearch.models.roles import DualEncoder
from pixsearch.train.data import TrainData


@dataclass(frozen=True)
class HardNegatives:
    texts: list[str]  # the distinct captions; text ids below index this list
    text_ids: list[list[int]]  # per image: its captions' ids
    texts_for_image: list[list[int]]  # per image: the most similar captions that are not its own, best first
    images_for_text: list[list[int]]  # per text: the most similar images it does not describe, best first


class NegativeDraws:
    """Draws negatives for ITM training: with probability `share` one of the mined hard ones, else
    any caption that is not the image's own (or any image the caption does not describe)."""

    def __init__(self, negatives: HardNegatives, images: int) -> None:
        self.negatives = negatives
        self.images = images
        self._text_ids = {text: i for i, text in enumerate(negatives.texts)}

    def text(self, rng: np.random.Generator, image: int, share: float) -> str:
        """A caption false of `image`."""
        hard = self.negatives.texts_for_image[image]
        if hard and rng.random() < share:
            return self.negatives.texts[hard[rng.integers(len(hard))]]
        own = set(self.negatives.text_ids[image])
        while True:
            text = int(rng.integers(len(self.negatives.texts)))
            if text not in own:
                return self.negatives.texts[text]

    def hard_images(self, text: str) -> list[int]:
        """The mined images most like `text` (a training caption) that it does not describe, best first."""
        return self.negatives.images_for_text[self._text_ids[text]]

    def image(self, rng: np.random.Generator, text: str, image: int, share: float) -> int:
        """An image that `text` (a caption of `image`) does not describe."""
        text_id = self._text_ids[text]
        hard = self.hard_images(text)
        if hard and rng.random() < share:
            return hard[rng.integers(len(hard))]
        while True:
            other = int(rng.integers(self.images))
            if other != image and text_id not in self.negatives.text_ids[other]:
                return other


def mine(
    encoder: DualEncoder,
    data: TrainData,
    top: int = 8,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> HardNegatives:
    """Embed every training image and caption with `encoder` and keep the `top` hardest negatives each way.

    A caption counts as an image's own when its text is one of that image's captions, so an identical
    caption of another image is never used as a negative for it.
    """
    texts = data.texts()
    position = {text: i for i, text in enumerate(texts)}
    text_ids = [[position[t] for t in dict.fromkeys(captions)] for captions in data.captions]
    image_vectors = []
    for start in range(0, len(data), batch_size):
        batch = data.images[start : start + batch_size]
        image_vectors.append(encoder.encode_images([load_image(path) for path in batch]))
        if progress:
            progress(start + len(batch), len(data) + len(texts))
    text_vectors = []
    for start in range(0, len(texts), batch_size):
        text_vectors.append(encoder.encode_texts(texts[start : start + batch_size]))
        if progress:
            progress(len(data) + min(start + batch_size, len(texts)), len(data) + len(texts))
    similarity = np.concatenate(image_vectors) @ np.concatenate(text_vectors).T  # [images, texts]
    own = np.zeros_like(similarity, dtype=bool)
    for image, ids in enumerate(text_ids):
        own[image, ids] = True
    masked = np.where(own, -np.inf, similarity)
    k_text = min(top, max(1, len(texts) - 1))
    k_image = min(top, max(1, len(data) - 1))
    texts_for_image = np.argsort(-masked, axis=1, kind="stable")[:, :k_text]
    images_for_text = np.argsort(-masked.T, axis=1, kind="stable")[:, :k_image]
    return HardNegatives(
        texts,
        text_ids,
        [[int(t) for t in row if not own[i, t]] for i, row in enumerate(texts_for_image)],
        [[int(i) for i in row if not own[i, t]] for t, row in enumerate(images_for_text)],
    )
