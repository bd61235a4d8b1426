"""Fine-tuning native mPLUG with the objectives of its task models (ModelScope's `modeling_mplug.py`):

- retrieval (`mplug-itm`): image-text contrastive loss (ITC) with the learnable temperature `temp`,
  plus image-text matching (ITM) on the true pairs and, per image and per text, one hard negative
  drawn with probability softmax(ITC similarity) from the batch (as ALBEF/mPLUG sample them); with
  a negatives file (`--negatives`, as for blip-itm), ranking losses are added (not in the original):
  a true caption against its false edits for the same image, and an image against one its caption is
  listed as false of (a swapped twin); with `--miner`, the negatives are drawn from the miner's hardest
  over the whole data set instead of the batch, as blip-itm draws them;
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

import numpy as np
import torch
from torch.nn import functional as F

from pixsearch.errors import ConfigError
from pixsearch.models.mplug.config import CAPTION, REQUIRED_FILES, RETRIEVAL, VQA, read_config
from pixsearch.models.mplug.loading import CHECKPOINT, check_task, load_model
from pixsearch.models.mplug.modeling import RUN_PARTS, MplugModel
from pixsearch.models.mplug.processor import image_transform
from pixsearch.models.mplug.tokenizer import MplugTokenizer
from pixsearch.train.data import load_captions, load_questions, ranking_texts
from pixsearch.train.mining import NegativeDraws
from pixsearch.train.mplug_tiny import build_tiny_mplug
from pixsearch.train.native import NativeBackend, NativeSetup, NativeTask, read_state_dict
from pixsearch.train.tasks import ranking_loss

TEMPERATURE_RANGE = (0.001, 0.5)  # ALBEF's clamp of the learnable ITC temperature
RANKED, RANK_WEIGHT = 4, 3.0  # explicit negatives: false edits per true caption, weight (as blip-itm)
SCRATCH_HARD_SHARE = 0.5  # from scratch: the largest share of similarity-drawn negatives (see hard_share)
MINED_SHARE = 0.8  # with --miner: the share of negatives drawn from the mined ones (as blip-itm)


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
        self.from_scratch = setup.from_scratch
        self.draws = NegativeDraws(setup.mined, len(self.data)) if setup.mined is not None else None
        self.false_of: dict[str, list[int]] = {}  # caption -> the images the negatives file says it is false of
        for index, pairs in enumerate(self.data.negatives):
            for _, negative in pairs:
                self.false_of.setdefault(negative, []).append(index)
        temp = read_state_dict(self.directory / CHECKPOINT).get(self.stored_names.get("temp", "temp"))
        # the temperature trains with the model where the checkpoint stores it; else it stays the config's
        if temp is not None:
            self.model.temp = torch.nn.Parameter(temp.detach().float().clone())
        else:
            self.fixed_temp = float(_config_temperature(self.directory))

    def hard_share(self, step: int) -> float:
        """How much the negatives are drawn by similarity (1) rather than uniformly (0) at a step.

        1 throughout when fine-tuning, as the original. A model from scratch first has to learn to
        match at all: facing near-identical negatives from the first step it learns only the prior
        ("no match"), so uniform negatives come first and hard ones in from 30% to 50% of the steps
        (the schedule of blip-itm's hard negatives), to half of them: with only hard negatives a tiny
        model from scratch also learned to call unrelated images a match, and reranking with it lost
        more R@1 (measured on the synthetic world, 600 steps: -3.6 points against -0.6 with half)."""
        if not self.from_scratch:
            return 1.0
        start, ramp = 0.3 * self.steps, max(1.0, 0.2 * self.steps)
        return SCRATCH_HARD_SHARE * min(1.0, max(0.0, (step - start) / ramp))

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
        n, share = len(rows), self.hard_share(step)
        mined_texts: list[str] = []
        mined_images: list[int] = []
        if self.draws is not None:  # mined over the whole data set by --miner, as blip-itm draws them
            mined_texts = [self.draws.text(rng, int(i), MINED_SHARE * share) for i in rows]
            pairs = zip(captions, rows, strict=True)
            mined_images = [self.draws.image(rng, c, int(i), MINED_SHARE * share) for c, i in pairs]
        ids, mask = self.tokens(captions + mined_texts)
        images = model.image_embeds(self.pixels[np.concatenate([rows, mined_images]).astype(int)])
        texts = model.text_hidden(ids, mask)
        image, text = images[:n], texts[:n]
        sim_i2t = F.normalize(model.itc_image(image), dim=-1) @ F.normalize(model.itc_text(text), dim=-1).T
        sim_i2t = sim_i2t / self.temperature
        # a caption is a positive of every image it describes (two images may share a caption)
        positive = torch.tensor([[c in self.data.captions[i] for c in captions] for i in rows])
        targets = positive.float() / positive.sum(1, keepdim=True)
        itc = (_soft_cross_entropy(sim_i2t, targets) + _soft_cross_entropy(sim_i2t.T, targets.T)) / 2
        if self.draws is not None:
            negatives = (images[n:], image), (text, texts[n:]), (mask[:n], mask[n:])
        else:
            negatives = self._batch_negatives(step, sim_i2t, positive, image, text, mask[:n])
        # as ModelScope: (image, its text) = match; (other image, text) and (image, other text) = no match
        logits = model.itm_logits(
            torch.cat([image, *negatives[0]]), torch.cat([text, *negatives[1]]), torch.cat([mask[:n], *negatives[2]])
        )
        labels = torch.zeros(len(logits), dtype=torch.long)
        labels[:n] = 1
        loss = itc + F.cross_entropy(logits, labels)
        for ranking in (self._ranking(rng, rows, image), self._image_ranking(rng, rows, captions, image, text, mask)):
            if ranking is not None:
                loss = loss + RANK_WEIGHT * ranking
        return loss

    def _batch_negatives(
        self,
        step: int,
        sim_i2t: torch.Tensor,
        positive: torch.Tensor,
        image: torch.Tensor,
        text: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[tuple[torch.Tensor, ...], ...]:
        """Per text an image and per image a text of the batch, drawn by ITC similarity among the
        non-positives: ((images), (texts), (masks)) of the (other image, text) and (image, other text) pairs."""
        generator, share = self.generator(step), self.hard_share(step)
        with torch.no_grad():
            image_rows, wrong_text = _draw(_negative_weights(sim_i2t, positive, share), generator)
            text_rows, wrong_image = _draw(_negative_weights(sim_i2t.T, positive.T, share), generator)
        return (
            (image[wrong_image], image[image_rows]),
            (text[text_rows], text[wrong_text]),
            (mask[text_rows], mask[wrong_text]),
        )

    def _ranking(self, rng: np.random.Generator, rows: np.ndarray, image: torch.Tensor) -> torch.Tensor | None:
        """With explicit negatives (`--negatives`: e.g. a caption with two attributes swapped): a true
        caption of each batch image against `RANKED` of its false edits, as blip-itm ranks them; None
        when no image of the batch has any. Batch negatives seldom differ from a true caption only in
        word order; these do, and teach the fusion layers which attribute goes with which object."""
        picked, texts = ranking_texts(self.data, rows, rng, RANKED)
        if not picked:
            return None
        ids, mask = self.tokens(texts)
        images = image[picked].repeat_interleave(RANKED + 1, 0)
        return ranking_loss(self.model.itm_logits(images, self.model.text_hidden(ids, mask), mask), len(picked), RANKED)

    def _image_ranking(
        self,
        rng: np.random.Generator,
        rows: np.ndarray,
        captions: list[str],
        image: torch.Tensor,
        text: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor | None:
        """The image side of `_ranking`: a caption must score its own image above an image the
        negatives file lists it as false of (a swapped-attribute twin, say): what text-to-image
        reranking asks. None when no caption of the batch is listed as false of another image."""
        picked = [j for j, caption in enumerate(captions) if self.false_of.get(caption)]
        if not picked:
            return None
        others = [self.false_of[captions[j]][rng.integers(len(self.false_of[captions[j]]))] for j in picked]
        wrong = self.model.image_embeds(self.pixels[others])
        logits = self.model.itm_logits(
            torch.stack([image[picked], wrong], 1).flatten(0, 1),
            text[picked].repeat_interleave(2, 0),
            mask[picked].repeat_interleave(2, 0),
        )
        return ranking_loss(logits, len(picked), 1)


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


def _negative_weights(sim: torch.Tensor, positive: torch.Tensor, share: float) -> torch.Tensor:
    """Per row, the chance of each column being drawn as its negative: softmax(sim) among the
    non-positives (weight `share`) mixed with a uniform draw among them (1 - share)."""
    hard = F.softmax(sim, dim=1).masked_fill(positive, 0)
    hard = hard / hard.sum(1, keepdim=True).clamp_min(1e-12)
    uniform = (~positive).float()
    uniform = uniform / uniform.sum(1, keepdim=True).clamp_min(1.0)
    return share * hard + (1 - share) * uniform


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
