"""VLE training tasks: VQA as answer classification over the model's label set, and image-text matching.

Both train the native VLE (`pixsearch.models.vle`) and save in the publisher's layout through
`VleWriter`. The losses are the original's (iflytek/VLE `VLEForVQA` / `VLEForITM`): VQA is a
binary cross-entropy over every answer label times the number of labels, ITM a two-way
cross-entropy (no match / match). One difference: the native model has no dropout in its
co-attention layers (it was written for inference); the DeBERTa tower keeps its own.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pixsearch.errors import ConfigError
from pixsearch.models.preprocess import ImageTransform
from pixsearch.models.vle.config import VleConfig
from pixsearch.models.vle.heads import Head
from pixsearch.models.vle.processor import VleProcessor, image_transform_from_dir
from pixsearch.models.vle.weights import build_model
from pixsearch.train.data import TrainData
from pixsearch.train.tasks import batch_indices
from pixsearch.train.vle_checkpoint import VleSource, VleWriter, load_trained, new_head_state

log = logging.getLogger(__name__)

VLE_BACKENDS = {"vle-vqa": Head.VQA, "vle-itm": Head.ITM}
EXPLICIT_SHARE = 0.5  # ITM: the chance a negative caption is one of the image's explicit false edits, when it has any


def vle_transform(directory: Path) -> ImageTransform:
    """The pixel transform the VLE backends apply to this checkpoint (training uses the same)."""
    return image_transform_from_dir(Path(directory))


def step_seed(seed: int, step: int) -> int:
    """The torch seed of one step (dropout): a function of (seed, step) only, so a resumed run repeats it."""
    return int(np.random.default_rng([seed, step, 2]).integers(2**62))


class _VleTask:
    """Loading a VLE checkpoint for one head, per-step randomness, saving like the original."""

    head: Head
    backend: str

    def __init__(self, directory: Path, data: TrainData, batch_size: int, seed: int) -> None:
        self.directory = Path(directory)
        self.source = VleSource.read(self.directory)
        self.processor = VleProcessor.from_dir(self.directory)
        self.data, self.seed = data, seed
        self.batch_size = min(batch_size, len(data))
        self.items_per_step = self.batch_size
        self.raw_config = copy.deepcopy(self.source.raw_config)
        state, added = self.prepare(dict(self.source.state), torch.Generator().manual_seed(seed))
        self.model, _ = build_model(VleConfig.from_dict(self.raw_config), self.head, state)
        self.model.float()
        self.writer = VleWriter(self.source, self.head, added)
        self.pixels = torch.from_numpy(data.pixels)

    @property
    def fusion_width(self) -> int:
        return 2 * int(self.raw_config.get("hidden_size", 768))

    def has_head(self, state: dict[str, torch.Tensor], name: str) -> bool:
        return any(key.split(".", 1)[0] == name for key in state)

    def prepare(
        self, state: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The starting state (checkpoint names) and the names of head keys added to it."""
        raise NotImplementedError

    def rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, 1])

    def indices(self, step: int) -> np.ndarray:
        return batch_indices(len(self.data), self.batch_size, self.seed, step)

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.processor.tokenizer(texts)

    def loss(self, step: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(self.seed, step))
            return self.step_loss(step)

    def step_loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write the model into `directory` in the publisher's layout (see `vle_checkpoint`)."""
        self.writer.write(Path(directory), self.model, self.raw_config)

    def restore(self, directory: Path) -> None:
        """Load the weights of a checkpoint this task saved (resuming a run)."""
        load_trained(Path(directory), self.head, self.model)


class VleVqaTask(_VleTask):
    """VQA over the checkpoint's answer labels. Answers of the training data that are not labels yet
    are added: the classifier's last layer grows by one row each (drawn as the original draws new
    weights) and config.json's id2label / label2id gain them, so the original `VLEForVQA`, which
    sizes its classifier by `len(config.id2label)`, loads the result as it is.

    A checkpoint without a VQA head (the pre-training hfl/vle-base) gets a new one over the
    training answers, most frequent first.
    """

    head = Head.VQA
    backend = "vle-vqa"

    def prepare(
        self, state: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        counts = Counter(answer for pairs in self.data.qa for _, answer in pairs)
        answers = [answer for answer, _ in counts.most_common()]
        if not answers:
            raise ConfigError("VLE VQA training needs questions with answers")
        added: list[str] = []
        if self.has_head(state, "vqa_classifier"):
            labels = [label for _, label in sorted(VleConfig.from_dict(self.raw_config).id2label.items())]
            new = [answer for answer in answers if answer not in set(labels)]
            if new:
                self._grow(state, len(new), generator)
                log.info("VLE VQA: %d new answer label(s): %s", len(new), ", ".join(new[:20]))
            labels += new
        else:
            labels = answers
            head = new_head_state(Head.VQA, self.fusion_width, len(labels), generator)
            dtype = self.source.float_dtype()
            state.update({key: tensor.to(dtype) for key, tensor in head.items()})
            added = list(head)
            log.info("VLE VQA: the checkpoint has no VQA head; a new one over %d answers", len(labels))
        self.raw_config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        self.raw_config["label2id"] = {label: i for i, label in enumerate(labels)}
        self.label_ids = {label: i for i, label in enumerate(labels)}
        return state, added

    def _grow(self, state: dict[str, torch.Tensor], extra: int, generator: torch.Generator) -> None:
        weight, bias = state["vqa_classifier.3.weight"], state["vqa_classifier.3.bias"]
        rows = new_head_state(Head.VQA, weight.shape[1], extra, generator)
        state["vqa_classifier.3.weight"] = torch.cat([weight, rows["vqa_classifier.3.weight"].to(weight.dtype)])
        state["vqa_classifier.3.bias"] = torch.cat([bias, rows["vqa_classifier.3.bias"].to(bias.dtype)])

    @property
    def labels(self) -> list[str]:
        return list(self.label_ids)

    def step_loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        picked = [self.data.qa[i][rng.integers(len(self.data.qa[i]))] for i in rows]
        tokens = self.tokens([question for question, _ in picked])
        logits = self.model(**tokens, pixel_values=self.pixels[rows])
        targets = torch.zeros_like(logits)
        targets[torch.arange(len(picked)), [self.label_ids[answer] for _, answer in picked]] = 1.0
        return F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]


class VleItmTask(_VleTask):
    """Image-text matching: per image one matching caption, one caption of another image (or, with
    probability `EXPLICIT_SHARE`, one of its explicit false edits from a negatives file) and one
    other image; labels match / no match / no match. A checkpoint without an ITM head gets one."""

    head = Head.ITM
    backend = "vle-itm"

    def prepare(
        self, state: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        if len(self.data) < 2:
            raise ConfigError(f"ITM training needs at least 2 images, got {len(self.data)}")
        self.items_per_step = 3 * self.batch_size  # image-text pairs scored per step
        if self.has_head(state, "itm_score"):
            return state, []
        head = new_head_state(Head.ITM, self.fusion_width, 2, generator)
        state.update({key: tensor.to(self.source.float_dtype()) for key, tensor in head.items()})
        log.info("VLE ITM: the checkpoint has no ITM head; a new one is trained")
        return state, list(head)

    def _pair(self, rng: np.random.Generator, image: int) -> tuple[str, str]:
        """(a true caption of the image, a caption false of it)."""
        explicit = self.data.negatives[image] if self.data.negatives else []
        if explicit and rng.random() < EXPLICIT_SHARE:
            return explicit[rng.integers(len(explicit))]
        captions = self.data.captions[image]
        caption = captions[rng.integers(len(captions))]
        while True:
            other = int(rng.integers(len(self.data)))
            candidates = [text for text in self.data.captions[other] if text not in captions]
            if other != image and candidates:
                return caption, candidates[rng.integers(len(candidates))]

    def _other_image(self, rng: np.random.Generator, image: int, caption: str) -> int:
        for _ in range(100):
            other = int(rng.integers(len(self.data)))
            if other != image and caption not in self.data.captions[other]:
                return other
        raise ConfigError(f"no image of the training data is false of {caption!r}")

    def step_loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        pairs = [self._pair(rng, int(i)) for i in rows]
        wrong_images = [self._other_image(rng, int(i), caption) for i, (caption, _) in zip(rows, pairs, strict=True)]
        n, vle = len(rows), self.model.vle
        vision = vle.get_image_features(self.pixels[np.concatenate([rows, wrong_images])])
        tokens = self.tokens([caption for caption, _ in pairs] + [negative for _, negative in pairs])
        text = vle.get_text_features(tokens["input_ids"], tokens["attention_mask"])
        mask = tokens["attention_mask"]
        # (image, caption) = match, (image, false caption) = no match, (other image, caption) = no match
        fused = vle.fuse(
            torch.cat([text[:n], text[n:], text[:n]]),
            torch.cat([mask[:n], mask[n:], mask[:n]]),
            torch.cat([vision[:n], vision[:n], vision[n:]]),
        )
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long()
        return F.cross_entropy(self.model.head_logits(fused), labels)
