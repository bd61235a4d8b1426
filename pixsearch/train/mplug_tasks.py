"""Fine-tuning native mPLUG with the objectives of its task models (ModelScope's `modeling_mplug.py`):

- retrieval (`mplug-itm`): image-text contrastive loss (ITC) with the learnable temperature `temp`,
  plus image-text matching (ITM) on the true pairs and, per image and per text, one hard negative
  drawn with probability softmax(ITC similarity) from the batch (as ALBEF/mPLUG sample them);
- VQA (`mplug-vqa`): the decoder learns the answer by teacher forcing, attending to the fused image
  and question states; the loss is the answer's summed token cross-entropy, averaged over questions;
- captioning (`mplug-caption`): the same over the caption, attending to the image embeddings
  (Chinese or English: the folder's WordPiece vocabulary splits CJK characters, as BERT does).

Left out, for a single-process fine-tune: the momentum (distillation) encoders and the feature
queues (the original keeps `idx_queue` etc. in the checkpoint; they are written back unchanged), and
dropout (the native modules have none). The weights are saved under the checkpoint's own key names.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from pixsearch.errors import ConfigError
from pixsearch.models.mplug.config import CAPTION, REQUIRED_FILES, RETRIEVAL, VQA, read_config
from pixsearch.models.mplug.loading import CHECKPOINT, check_task, load_model
from pixsearch.models.mplug.modeling import RUN_PARTS, MplugModel
from pixsearch.models.mplug.processor import image_transform
from pixsearch.models.mplug.tokenizer import MplugTokenizer
from pixsearch.train.data import load_captions, load_questions
from pixsearch.train.mplug_tiny import build_tiny_mplug
from pixsearch.train.native import NativeBackend, NativeSetup, NativeTask, read_state_dict

TEMPERATURE_RANGE = (0.001, 0.5)  # ALBEF's clamp of the learnable ITC temperature


class MplugTask(NativeTask):
    """Loads the parts the task runs in float32, trainable; maps them to the checkpoint's key names."""

    task = RETRIEVAL
    weights_file = CHECKPOINT

    def __init__(self, setup: NativeSetup) -> None:
        super().__init__(setup)
        check_task(self.directory, self.task)
        self.model: MplugModel = self._load(self.directory)
        self.model.requires_grad_(True).train()
        self.tokenizer = MplugTokenizer.from_dir(self.directory)
        # ModelScope removes every 'model.' from the stored keys; keep the stored name of each
        stored = read_state_dict(self.directory / CHECKPOINT)
        self.stored_names = {key.replace("model.", ""): key for key in stored}

    def _load(self, directory: Path) -> MplugModel:
        return load_model(directory, self.task, RUN_PARTS[self.task], dtype=torch.float32)

    def trained_weights(self) -> dict[str, torch.Tensor]:
        return {self.stored_names[key]: value for key, value in self.model.state_dict().items()}

    def read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        return self._load(directory).state_dict()

    def tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask cut to the batch's longest text: the trailing padding only costs time (padded
        positions are masked out, so every other position computes the same)."""
        ids, mask = self.tokenizer.encode(texts)
        width = max(1, int(mask.sum(1).max()))
        return ids[:, :width], mask[:, :width]

    def decoder_loss(self, memory: torch.Tensor, memory_mask: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Teacher-forced cross-entropy of `texts` ([CLS] text [SEP], as generation starts and ends),
        summed over each text's tokens and averaged over the texts."""
        ids, mask = self.tokens(texts)
        kv, memory_add = self.model.decoder_inputs(memory, memory_mask)
        logits = self.model.text_decoder(ids, kv, memory_add)[:, :-1]
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        per_token = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return per_token.sum(1).mean()


class MplugRetrievalTask(MplugTask):
    task = RETRIEVAL

    def __init__(self, setup: NativeSetup) -> None:
        super().__init__(setup)
        if self.batch_size < 2:
            raise ConfigError(f"mplug-itm training needs at least 2 images, got {len(self.data)}")
        self.items_per_step = 3 * self.batch_size  # image-text pairs the ITM head scores per step
        temp = read_state_dict(self.directory / CHECKPOINT).get(self.stored_names.get("temp", "temp"))
        # the temperature trains with the model where the checkpoint stores it; else it stays the config's
        if temp is not None:
            self.model.temp = torch.nn.Parameter(temp.detach().float().clone())
        else:
            self.fixed_temp = float(_config_temperature(self.directory))

    @property
    def temperature(self) -> torch.Tensor | float:
        return self.model.temp if hasattr(self.model, "temp") else self.fixed_temp

    def read_weights(self, directory: Path) -> dict[str, torch.Tensor]:
        weights = super().read_weights(directory)
        if hasattr(self.model, "temp"):
            weights["temp"] = read_state_dict(directory / CHECKPOINT)[self.stored_names["temp"]].float()
        return weights

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        model = self.model
        if hasattr(model, "temp"):
            with torch.no_grad():
                model.temp.clamp_(*TEMPERATURE_RANGE)
        captions = [self.data.captions[i][rng.integers(len(self.data.captions[i]))] for i in rows]
        ids, mask = self.tokens(captions)
        image = model.image_embeds(self.pixels[rows])
        text = model.text_hidden(ids, mask)
        image_feat = F.normalize(model.itc_image(image), dim=-1)
        text_feat = F.normalize(model.itc_text(text), dim=-1)
        sim_i2t = image_feat @ text_feat.T / self.temperature
        # a caption is a positive of every image it describes (two images may share a caption)
        positive = torch.tensor([[c in self.data.captions[i] for c in captions] for i in rows])
        targets = positive.float() / positive.sum(1, keepdim=True)
        itc = (_soft_cross_entropy(sim_i2t, targets) + _soft_cross_entropy(sim_i2t.T, targets.T)) / 2
        # hard negatives: per image a text, per text an image, drawn by ITC similarity among non-positives
        generator = self.generator(step)
        with torch.no_grad():
            image_rows, wrong_text = _draw(F.softmax(sim_i2t, dim=1).masked_fill(positive, 0), generator)
            text_rows, wrong_image = _draw(F.softmax(sim_i2t.T, dim=1).masked_fill(positive.T, 0), generator)
        # as ModelScope: (image, its text) = match; (other image, text) and (image, other text) = no match
        logits = model.itm_logits(
            torch.cat([image, image[wrong_image], image[image_rows]]),
            torch.cat([text, text[text_rows], text[wrong_text]]),
            torch.cat([mask, mask[text_rows], mask[wrong_text]]),
        )
        labels = torch.cat([torch.ones(len(rows)), torch.zeros(len(text_rows) + len(image_rows))]).long()
        return itc + F.cross_entropy(logits, labels)


class MplugVqaTask(MplugTask):
    task = VQA

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        picked = [self.data.qa[i][rng.integers(len(self.data.qa[i]))] for i in rows]
        ids, mask = self.tokens([question for question, _ in picked])
        model = self.model
        image = model.image_embeds(self.pixels[rows])
        memory, memory_mask = model.answer_memory(image, model.text_hidden(ids, mask), mask)
        return self.decoder_loss(memory, memory_mask, [answer for _, answer in picked])


class MplugCaptionTask(MplugTask):
    task = CAPTION

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        captions = [self.data.captions[i][rng.integers(len(self.data.captions[i]))] for i in rows]
        memory, memory_mask = self.model.caption_memory(self.model.image_embeds(self.pixels[rows]))
        return self.decoder_loss(memory, memory_mask, captions)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(F.log_softmax(logits, dim=1) * targets).sum(1).mean()


def _draw(weights: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, one column per row drawn in proportion to `weights`), for the rows with any weight: a row
    whose every column is a positive has no negative to draw."""
    rows = (weights.sum(1) > 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return rows, rows
    return rows, torch.multinomial(weights[rows], 1, generator=generator).squeeze(1)


def _config_temperature(directory: Path) -> float:
    import yaml

    data = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8")) or {}
    return float(data.get("temp", 0.07))


def _transform(directory: Path):
    return image_transform(read_config(directory))


def _builder(task: str):
    def build(directory: Path, words: list[str], config, seed: int) -> None:
        build_tiny_mplug(task, directory, words, config, seed)

    return build


ITM_BACKEND = NativeBackend(
    REQUIRED_FILES, CHECKPOINT, _transform, load_captions, MplugRetrievalTask, "captions", _builder(RETRIEVAL)
)
VQA_BACKEND = NativeBackend(
    REQUIRED_FILES, CHECKPOINT, _transform, load_questions, MplugVqaTask, "questions", _builder(VQA)
)
CAPTION_BACKEND = NativeBackend(
    REQUIRED_FILES, CHECKPOINT, _transform, load_captions, MplugCaptionTask, "captions", _builder(CAPTION)
)
