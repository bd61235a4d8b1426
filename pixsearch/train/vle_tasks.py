"""VLE training tasks: VQA as answer classification over the model's label set, and image-text matching.

Both train the native VLE (`pixsearch.models.vle`) and save in the publisher's layout (see
`vle_checkpoint` and `native.save_publisher_layout`). The losses are the original's (iflytek/VLE
`VLEForVQA` / `VLEForITM`): VQA is a binary cross-entropy over every answer label times the number
of labels, ITM a two-way cross-entropy (no match / match). Differences: the native model has no
dropout in its co-attention layers (it was written for inference; the DeBERTa tower keeps its own),
and a VQA question's target is its most common answer with score 1, where the original's data module
gives every human answer its VQA soft score.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pixsearch.errors import ConfigError, ModelLoadError
from pixsearch.models.preprocess import ImageTransform
from pixsearch.models.vle.backends import REQUIRED_FILES
from pixsearch.models.vle.config import VleConfig
from pixsearch.models.vle.heads import Head
from pixsearch.models.vle.processor import VleProcessor, image_transform_from_dir
from pixsearch.models.vle.weights import build_model, load_vle
from pixsearch.train.data import load_captions, load_questions
from pixsearch.train.native import NativeBackend, NativeSetup, NativeTask, read_state_dict, save_publisher_layout
from pixsearch.train.tiny import TinyConfig
from pixsearch.train.vle_checkpoint import new_head_state, stored_names, weights_file
from pixsearch.train.vle_tiny import build_tiny_vle

log = logging.getLogger(__name__)

EXPLICIT_SHARE = 0.5  # ITM: the chance a negative caption is one of the image's explicit false edits, when it has any


def vle_transform(directory: Path) -> ImageTransform:
    """The pixel transform the VLE backends apply to this checkpoint (training uses the same)."""
    return image_transform_from_dir(Path(directory))


class _VleTask(NativeTask):
    """A VLE head model loaded for training in float32, its weights mapped to their checkpoint keys."""

    head: Head

    def __init__(self, setup: NativeSetup) -> None:
        super().__init__(setup)
        self.weights_file = weights_file(self.directory)
        self.processor = VleProcessor.from_dir(self.directory)
        self.raw_config = load_raw_config(self.directory)
        self.changed: list[str] = []  # checkpoint keys that grow or are new (set by `prepare`)
        # cloned out of the memory-mapped file: the model is built on these tensors and trains them
        state = {k: v.clone() for k, v in read_state_dict(self.directory / self.weights_file).items()}
        state = self.prepare(state, torch.Generator().manual_seed(self.seed))
        self.stored = stored_names(list(state), self.head)
        self.model, _ = build_model(VleConfig.from_dict(self.raw_config), self.head, state)
        self.model.float().requires_grad_(True).train()

    @property
    def fusion_width(self) -> int:
        return 2 * int(self.raw_config.get("hidden_size", 768))

    def prepare(self, state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The starting state (checkpoint keys), with any head change made; records `changed`."""
        raise NotImplementedError

    def add_head(self, state: dict[str, torch.Tensor], out: int, generator: torch.Generator) -> None:
        dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
        head = new_head_state(self.head, self.fusion_width, out, generator)
        state.update({key: tensor.to(dtype) for key, tensor in head.items()})
        self.changed += list(head)

    def tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.processor.tokenizer(texts)

    def loss(self, step: int) -> torch.Tensor:
        # the DeBERTa tower's dropout draws from torch's global generator: seed it by step
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.generator(step).initial_seed())
            return self.step_loss(step)

    def step_loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def trained_weights(self) -> dict[str, torch.Tensor]:
        return {self.stored[name]: tensor for name, tensor in self.model.state_dict().items()}

    def read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        return load_vle(directory, self.head)[0].state_dict()

    def save(self, directory: Path) -> None:
        """The input folder with the weights rewritten (and config.json, where the labels grew)."""
        directory = Path(directory)
        save_publisher_layout(self.directory, directory, self.weights_file, self.trained_weights(), self.changed)
        if self.raw_config != load_raw_config(self.directory):
            (directory / "config.json").write_text(json.dumps(self.raw_config, indent=2) + "\n", encoding="utf-8")


def load_raw_config(directory: Path) -> dict:
    """config.json as a dict, unchanged (written back as it was, but for the answer labels)."""
    try:
        return json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read VLE config {Path(directory) / 'config.json'}: {error}") from error


class VleVqaTask(_VleTask):
    """VQA over the checkpoint's answer labels. Answers of the training data that are not labels yet
    are added: the classifier's last layer grows by one row each (drawn as the original draws new
    weights) and config.json's id2label / label2id gain them, so the original `VLEForVQA`, which
    sizes its classifier by `len(config.id2label)`, loads the result as it is.

    A checkpoint without a VQA head (the pre-training hfl/vle-base) gets a new one over the
    training answers, most frequent first.
    """

    head = Head.VQA

    def prepare(self, state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        counts = Counter(answer for pairs in self.data.qa for _, answer in pairs)
        answers = [answer for answer, _ in counts.most_common()]
        if "vqa_classifier.3.weight" in state:
            labels = [label for _, label in sorted(VleConfig.from_dict(self.raw_config).id2label.items())]
            new = [answer for answer in answers if answer not in set(labels)]
            if new:
                self._grow(state, len(new), generator)
                log.info("VLE VQA: %d new answer label(s): %s", len(new), ", ".join(new[:20]))
            labels += new
        else:
            labels = answers
            self.add_head(state, len(labels), generator)
            log.info("VLE VQA: the checkpoint has no VQA head; a new one over %d answers", len(labels))
        self.raw_config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        self.raw_config["label2id"] = {label: i for i, label in enumerate(labels)}
        self.label_ids = {label: i for i, label in enumerate(labels)}
        return state

    def _grow(self, state: dict[str, torch.Tensor], extra: int, generator: torch.Generator) -> None:
        weight, bias = state["vqa_classifier.3.weight"], state["vqa_classifier.3.bias"]
        rows = new_head_state(Head.VQA, self.fusion_width, extra, generator)
        state["vqa_classifier.3.weight"] = torch.cat([weight, rows["vqa_classifier.3.weight"].to(weight.dtype)])
        state["vqa_classifier.3.bias"] = torch.cat([bias, rows["vqa_classifier.3.bias"].to(bias.dtype)])
        self.changed += ["vqa_classifier.3.weight", "vqa_classifier.3.bias"]

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

    def prepare(self, state: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        if len(self.data) < 2:
            raise ConfigError(f"ITM training needs at least 2 images, got {len(self.data)}")
        self.items_per_step = 3 * self.batch_size  # image-text pairs scored per step
        if "itm_score.fc.weight" not in state:
            self.add_head(state, 2, generator)
            log.info("VLE ITM: the checkpoint has no ITM head; a new one is trained")
        return state

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


def _tiny(head: Head):
    def build(directory: Path, words: list[str], config: TinyConfig, seed: int) -> None:
        build_tiny_vle(directory, head, words, config, seed)

    return build


VQA_BACKEND = NativeBackend(
    REQUIRED_FILES, "pytorch_model.bin", vle_transform, load_questions, VleVqaTask, "questions", _tiny(Head.VQA)
)
ITM_BACKEND = NativeBackend(
    REQUIRED_FILES, "pytorch_model.bin", vle_transform, load_captions, VleItmTask, "captions", _tiny(Head.ITM)
)
