"""Stand-in models for web tests: no weights, instant answers, and a record of the images they got."""

from __future__ import annotations

import numpy as np


class FakeModels:
    """Captioner, answerer, entailer and patch scorer in one; `seen` lists the sizes of the images given."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def load(self) -> None: ...

    def close(self) -> None: ...

    def caption(self, images):
        self.seen.extend(image.size for image in images)
        return ["a drawing"]

    def answer(self, image, question, top_k):
        self.seen.append(image.size)
        return [("yes", 0.75), ("no", 0.25)][:top_k]

    def judge(self, image, statement):
        self.seen.append(image.size)
        return {"entailment": 0.5, "neutral": 0.25, "contradiction": 0.25}

    def patch_scores(self, image, text):
        self.seen.append(image.size)
        return np.full((2, 2), 0.5, dtype=np.float32)


# what WebOptions must name for the fakes to stand in for every role (checked, never loaded)
FAKE_SPECS = {
    "captioner": "blip-caption:/unused",
    "answerer": "blip-vqa:/unused",
    "entailer": "ofa-ve:/unused",
    "patch_scorer": "vle-pbc:/unused",
}


def install_fakes(app) -> FakeModels:
    """Put one FakeModels in every role of `app`'s model pool, as if loaded."""
    fakes = FakeModels()
    models = app.state.context.models
    for lazy in (models._captioner, models._answerer, models._entailer, models._patch_scorer):
        lazy._model = fakes
    return fakes
