"""BLIP training tasks: ITM reranking with hard negatives, captioning, visual question answering."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from pixsearch.models.spec import ModelSpec
from pixsearch.train.data import TrainData, ranking_texts
from pixsearch.train.mining import HardNegatives, NegativeDraws
from pixsearch.train.tasks import ITC_TEMPERATURE, _Task, ranking_loss


class ItmTask(_Task):
    """BLIP image-text matching, as BLIP pre-trains it: per image one matching caption, one negative
    caption and one negative image, the negatives drawn from those the dual encoder confuses most
    (with probability `hard_share`; otherwise any other). An image-text contrastive loss on BLIP's
    own projections is added: it gives the vision tower a dense signal early on.

    Hard negatives come in gradually (share 0 before `hard_from`, rising to `hard_share` over
    `hard_ramp` steps): a model trained from scratch first has to learn to match at all, and facing
    near-identical negatives from the first step it only learns the prior ("no match" 2 times in 3).

    Where the data carries explicit negatives (`TrainData.negatives`: captions false of an image,
    such as a true caption with two attributes swapped), a ranking loss is added from the first
    step: a true caption must out-score `ranked` of its false edits (softmax over the ITM match
    margins, weighted `rank_weight`). Mined negatives rarely differ from a true caption only in
    word order, so without this term a model learns a bag of words and cannot tell "a red circle
    left of a blue square" from "a blue circle left of a red square"; with it, tiny models from
    scratch learn the binding (measured on the synthetic world: twin pairs at chance without,
    about 0.7 with).

    With `image_ranked` > 0 each caption must also out-score, with its own image, `image_ranked` of the
    images the dual encoder confuses it with (softmax over the match margins): the reranker's job at
    search time, ordering the dual encoder's top k for a text. A second stage of this kind, at a lower
    learning rate after a first without it, taught the demo's tiny reranker the relations ("left of")
    that neither it nor the dual encoder had learned (relation twins 0.58 -> 0.75 on held-out scenes).
    """

    def __init__(
        self,
        spec: ModelSpec,
        data: TrainData,
        negatives: HardNegatives,
        batch_size: int,
        seed: int,
        hard_share: float = 0.8,
        hard_from: int = 0,
        hard_ramp: int = 1,
        rank_weight: float = 3.0,
        ranked: int = 4,
        image_ranked: int = 0,
    ) -> None:
        super().__init__(spec, data, batch_size, seed)
        self.negatives = negatives
        self.hard_share = hard_share
        self.rank_weight, self.ranked, self.image_ranked = rank_weight, ranked, image_ranked
        self.hard_from, self.hard_ramp = hard_from, max(1, hard_ramp)
        self.items_per_step = 3 * self.batch_size  # image-text pairs scored per step
        self.draws = NegativeDraws(negatives, len(data))

    def share(self, step: int) -> float:
        """The probability that a negative of this step is a mined hard one."""
        return self.hard_share * min(1.0, max(0.0, (step - self.hard_from) / self.hard_ramp))

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        model = self.model
        captions = [self.data.captions[i][rng.integers(len(self.data.captions[i]))] for i in rows]
        share = self.share(step)
        wrong_texts = [self.draws.text(rng, int(i), share) for i in rows]
        wrong_images = [self.draws.image(rng, t, int(i), share) for t, i in zip(captions, rows, strict=True)]
        n = len(rows)
        vision = model.vision_model(pixel_values=self.pixels[np.concatenate([rows, wrong_images])]).last_hidden_state
        right, wrong = vision[:n], vision[n:]
        good = self.tokens(captions)
        bad = self.tokens(wrong_texts)
        # ITM over (image, caption) = 1, (image, wrong caption) = 0, (wrong image, caption) = 0
        ids = _pad_cat(good["input_ids"], bad["input_ids"], good["input_ids"], self.tokenizer.pad_token_id)
        mask = _pad_cat(good["attention_mask"], bad["attention_mask"], good["attention_mask"], 0)
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long()
        itm = F.cross_entropy(self._itm(ids, mask, torch.cat([right, right, wrong])), labels)
        text_only = model.text_encoder(input_ids=good["input_ids"], attention_mask=good["attention_mask"])
        image_feat = F.normalize(model.vision_proj(right[:, 0, :]), dim=-1)
        text_feat = F.normalize(model.text_proj(text_only.last_hidden_state[:, 0, :]), dim=-1)
        logits = image_feat @ text_feat.T / ITC_TEMPERATURE
        target = torch.arange(n)
        itc = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        ranking = self._ranking(rng, rows, right)
        loss = itm + itc if ranking is None else itm + itc + self.rank_weight * ranking
        images = self._image_ranking(rng, captions, right) if self.image_ranked > 0 else None
        return loss if images is None else loss + images

    def _itm(self, ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """ITM logits (no match, match) of token rows against image token rows."""
        hidden = self.model.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image)
        return self.model.itm_head(hidden.last_hidden_state[:, 0, :])

    def _ranking(self, rng: np.random.Generator, rows: np.ndarray, vision: torch.Tensor) -> torch.Tensor | None:
        """Cross-entropy of a true caption of each image against `ranked` of its edits that are false
        (explicit negatives), or None when no image of the batch has any."""
        picked, texts = ranking_texts(self.data, rows, rng, self.ranked) if self.rank_weight > 0 else ([], [])
        if not picked:
            return None
        tokens = self.tokens(texts)
        logits = self._itm(
            tokens["input_ids"], tokens["attention_mask"], vision[picked].repeat_interleave(self.ranked + 1, 0)
        )
        return ranking_loss(logits, len(picked), self.ranked)

    def _image_ranking(
        self, rng: np.random.Generator, captions: list[str], vision: torch.Tensor
    ) -> torch.Tensor | None:
        """Cross-entropy of each caption's own image (`vision`, in caption order) against `image_ranked`
        of the images the dual encoder confuses the caption with, or None when no caption has any."""
        m = self.image_ranked
        picked, others = [], []
        for j, caption in enumerate(captions):
            hard = self.draws.hard_images(caption)
            if hard:
                picked.append(j)
                others += [hard[k] for k in rng.choice(len(hard), size=m, replace=len(hard) < m)]
        if not picked:
            return None
        confused = self.model.vision_model(pixel_values=self.pixels[others]).last_hidden_state
        images = torch.cat([vision[picked].unsqueeze(1), confused.view(len(picked), m, *confused.shape[1:])], 1)
        tokens = self.tokens([captions[j] for j in picked])
        logits = self._itm(
            tokens["input_ids"].repeat_interleave(m + 1, 0),
            tokens["attention_mask"].repeat_interleave(m + 1, 0),
            images.flatten(0, 1),
        )
        return ranking_loss(logits, len(picked), m)


def _pad_cat(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, pad: int) -> torch.Tensor:
    width = max(t.shape[1] for t in (a, b, c))
    return torch.cat([F.pad(t, (0, width - t.shape[1]), value=pad) for t in (a, b, c)])


class CaptionTask(_Task):
    """BLIP captioning: the decoder learns each caption given the image (teacher forcing), starting
    from the bos token that `generate` starts from."""

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        captions = [self.data.captions[i][rng.integers(len(self.data.captions[i]))] for i in rows]
        tokens = self.tokens(captions)
        ids = tokens["input_ids"].clone()
        ids[:, 0] = self.model.config.text_config.bos_token_id
        labels = ids.masked_fill(tokens["attention_mask"] == 0, -100)
        image = self.model.vision_model(pixel_values=self.pixels[rows]).last_hidden_state
        out = self.model.text_decoder(
            input_ids=ids,
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image,
            labels=labels,
            reduction="mean",
        )
        return out.loss


class VqaTask(_Task):
    """BLIP VQA: the question is encoded against the image, the decoder learns the answer from it."""

    def loss(self, step: int) -> torch.Tensor:
        rng, rows = self.rng(step), self.indices(step)
        picked = [self.data.qa[i][rng.integers(len(self.data.qa[i]))] for i in rows]
        question = self.tokens([q for q, _ in picked])
        answer = self.tokens([a for _, a in picked])
        ids = answer["input_ids"].clone()
        ids[:, 0] = self.model.config.text_config.bos_token_id
        labels = ids.masked_fill(answer["attention_mask"] == 0, -100)
        image = self.model.vision_model(pixel_values=self.pixels[rows]).last_hidden_state
        encoded = self.model.text_encoder(
            input_ids=question["input_ids"], attention_mask=question["attention_mask"], encoder_hidden_states=image
        ).last_hidden_state
        out = self.model.text_decoder(
            input_ids=ids,
            attention_mask=answer["attention_mask"],
            encoder_hidden_states=encoded,
            encoder_attention_mask=question["attention_mask"],
            labels=labels,
            reduction="mean",
        )
        return out.loss
